//! The gRPC edge: `envoy.service.accesslog.v3.AccessLogService`. Reads every message of
//! every stream, converts entries to [`LogLine`]s and hands one batch per message to an
//! [`EntrySink`] (awaiting it: that is the backpressure on Envoy).
use std::sync::Arc;

use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
    access_log_service_server::{AccessLogService, AccessLogServiceServer},
};
use kgw_common::{serve::Listener, shutdown::Shutdown};
use kgw_proto::identity::Identity;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    EntrySink, Error,
    line::{self, GatewayId, LogLine},
    stats::{self, RejectReason, Stats},
};

/// The service, generic over where lines go.
pub(crate) struct AlsService<S> {
    sink: S,
    stats: Arc<Stats>,
    shutdown: Shutdown,
}

impl<S: EntrySink> AlsService<S> {
    pub(crate) fn new(sink: S, stats: Arc<Stats>, shutdown: Shutdown) -> Self {
        Self { sink, stats, shutdown }
    }
}

/// Serves the access-log service on `listener` until `shutdown`: then stops accepting,
/// ends every open stream after the message it is on, and returns.
pub async fn serve<S: EntrySink>(
    listener: Listener,
    sink: S,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let local = listener.local_addr();
    tracing::info!(listen = ?local, "access-log service listening");
    let service = AccessLogServiceServer::new(AlsService::new(sink, stats, shutdown.clone()));
    let incoming = listener.incoming(shutdown.clone());
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move { shutdown.wait().await })
        .await
        .map_err(|source| Error::Serve { source })
}

/// Whether a receive error is a message we refuse (rather than a connection that broke).
/// tonic reports an over-limit message as OutOfRange and a decode failure as Internal.
fn reject_reason(status: &Status) -> Option<RejectReason> {
    match status.code() {
        tonic::Code::OutOfRange => Some(RejectReason::Oversized),
        tonic::Code::Internal if status.message().contains("decode") => Some(RejectReason::Malformed),
        _ => None,
    }
}

#[tonic::async_trait]
impl<S: EntrySink> AccessLogService for AlsService<S> {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        // Only Envoys (and admins) send access logs; an Envoy only for its own role.
        kgw_common::tls::grpc::authorize(&request, "access-log service", Identity::is_proxy_or_admin)?;
        let sender = kgw_common::tls::grpc::peer_of(&request);
        let peer = request
            .extensions()
            .get::<kgw_common::tls::ConnInfo>()
            .and_then(|info| info.remote)
            .or_else(|| request.remote_addr());
        let mut stream = request.into_inner();
        stats::add(&self.stats.streams, 1);
        // Known from the first message's identifier (Envoy sends it only there).
        let mut gateway: Option<Arc<GatewayId>> = None;
        let mut entries: u64 = 0;
        loop {
            let message = tokio::select! {
                biased;
                _ = self.shutdown.wait() => break,
                message = stream.message() => message,
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => match reject_reason(&status) {
                    Some(reason) => {
                        // A message we cannot read must not vanish behind an OK: say so to
                        // Envoy (its stream ends with this status), in the log and in metrics.
                        self.stats.rejected(reason);
                        tracing::error!(?peer, gateway = ?gateway.as_deref().map(ToString::to_string), reason = reason.label(), %status, "access-log message refused");
                        return Err(match reason {
                            RejectReason::Oversized => Status::resource_exhausted(status.message().to_string()),
                            RejectReason::Malformed => Status::invalid_argument(status.message().to_string()),
                        });
                    }
                    None => {
                        // Envoy went away mid-stream: nothing to answer.
                        tracing::debug!(?peer, gateway = ?gateway.as_deref().map(ToString::to_string), %status, "access-log stream broken");
                        break;
                    }
                },
            };
            if let Some(identifier) = &message.identifier {
                let id = Arc::new(GatewayId::from_node(identifier.node.as_ref()));
                let role = kgw_proto::nats::role(&id.namespace, &id.name);
                if !sender.allows(|identity| identity.may_read_role(&role)) {
                    tracing::warn!(?peer, %sender, gateway = %id, "access-log stream refused: the certificate names another gateway");
                    return Err(Status::permission_denied(format!(
                        "{sender} may not send access logs for {id}"
                    )));
                }
                tracing::info!(
                    ?peer,
                    gateway = %id,
                    node = identifier.node.as_ref().map_or("", |n| n.id.as_str()),
                    log_name = %identifier.log_name,
                    "access-log stream opened"
                );
                gateway = Some(id);
            }
            let gw = gateway.get_or_insert_with(|| {
                tracing::warn!(?peer, "access-log stream without identifier; gateway unknown");
                Arc::new(GatewayId::unknown())
            });
            let batch: Vec<LogLine> = match &message.log_entries {
                Some(entries) => line::lines(entries, gw),
                None => continue,
            };
            if batch.is_empty() {
                continue;
            }
            let n = batch.len() as u64;
            stats::add(&self.stats.entries_received, n);
            entries += n;
            tracing::debug!(gateway = %gw, entries = n, "access-log batch");
            if let Err(error) = self.sink.write(batch).await {
                tracing::error!(%error, "log writer gone; closing stream");
                return Err(Status::unavailable("access-log writer stopped"));
            }
        }
        tracing::info!(
            ?peer,
            gateway = %gateway.as_deref().map_or_else(|| "unknown".to_string(), ToString::to_string),
            entries,
            "access-log stream closed"
        );
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}
