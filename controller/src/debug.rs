//! Proxy debug gRPC (port 9966, as Gloo's ProxyEndpointService): lists and gets the Proxies
//! the controller holds. The service reads them through [`ProxySource`] (the actor's
//! published state), and the `controller proxies` subcommand is its client.
use std::{collections::BTreeMap, sync::Arc};

use kgw_common::tls::TlsMode;
use kgw_proto::v1::{
    self as pb,
    proxy_debug_service_client::ProxyDebugServiceClient,
    proxy_debug_service_server::{ProxyDebugService, ProxyDebugServiceServer},
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::actor::Published;

/// The Proxies the controller holds, by KV key (`<namespace>.<name>`).
pub trait ProxySource: Send + Sync + 'static {
    fn proxies(&self) -> Arc<BTreeMap<String, pb::Proxy>>;
}

impl ProxySource for watch::Receiver<Published> {
    /// Assembled from the actor's parts on each call (the debug service is seldom asked).
    fn proxies(&self) -> Arc<BTreeMap<String, pb::Proxy>> {
        let view = self.borrow().proxies.clone();
        Arc::new(view.all())
    }
}

impl ProxySource for watch::Receiver<Arc<BTreeMap<String, pb::Proxy>>> {
    fn proxies(&self) -> Arc<BTreeMap<String, pb::Proxy>> {
        self.borrow().clone()
    }
}

pub struct ProxyDebug<S> {
    source: S,
}

impl<S: ProxySource> ProxyDebug<S> {
    pub fn new(source: S) -> Self {
        Self { source }
    }

    pub fn into_server(self) -> ProxyDebugServiceServer<Self> {
        ProxyDebugServiceServer::new(self).max_encoding_message_size(64 * 1024 * 1024)
    }
}

fn namespace_of(proxy: &pb::Proxy) -> &str {
    proxy.metadata.as_ref().map_or("", |m| m.namespace.as_str())
}

#[tonic::async_trait]
impl<S: ProxySource> ProxyDebugService for ProxyDebug<S> {
    async fn list_proxies(
        &self,
        request: Request<pb::ListProxiesRequest>,
    ) -> Result<Response<pb::ListProxiesResponse>, Status> {
        let namespace = request.into_inner().namespace;
        let proxies = self
            .source
            .proxies()
            .values()
            .filter(|p| namespace.is_empty() || namespace_of(p) == namespace)
            .cloned()
            .collect();
        Ok(Response::new(pb::ListProxiesResponse { proxies }))
    }

    async fn get_proxy(&self, request: Request<pb::GetProxyRequest>) -> Result<Response<pb::GetProxyResponse>, Status> {
        let pb::GetProxyRequest { namespace, name } = request.into_inner();
        if name.is_empty() {
            return Err(Status::invalid_argument("GetProxyRequest.name is empty"));
        }
        if namespace.is_empty() {
            return Err(Status::invalid_argument(format!(
                "GetProxyRequest.namespace is empty (proxy {name:?})"
            )));
        }
        let proxies = self.source.proxies();
        match proxies.get(&kgw_proto::nats::key(&namespace, &name)) {
            Some(proxy) => Ok(Response::new(pb::GetProxyResponse {
                proxy: Some(proxy.clone()),
            })),
            None => Err(Status::not_found(format!(
                "proxy {namespace}/{name} not found; the controller holds {}",
                if proxies.is_empty() {
                    "no proxies".to_string()
                } else {
                    proxies
                        .values()
                        .filter_map(|p| p.metadata.as_ref())
                        .map(|m| format!("{}/{}", m.namespace, m.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))),
        }
    }
}

/// How `controller proxies` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Yaml,
    Json,
}

/// `controller proxies [--namespace NS] [NAME]`: the Proxies a running controller holds.
#[derive(Clone, Debug, clap::Args)]
pub struct ProxiesArgs {
    /// Only this namespace; empty: every namespace (with NAME: `default`).
    #[arg(long, short = 'n', default_value = "")]
    pub namespace: String,
    /// One Proxy (its Gateway's name); without it, every Proxy.
    pub name: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
    /// host:port of the controller's proxy debug gRPC server.
    #[arg(long, env = "KGW_DEBUG_ADDR", default_value = "127.0.0.1:9966")]
    pub debug_addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DebugClientError {
    #[error("proxy debug server address")]
    Address(#[source] kgw_common::tls::client::ClientError),
    #[error("{}", .0.message())]
    Call(#[source] tonic::Status),
    #[error("cannot print YAML")]
    Yaml(#[source] serde_yaml::Error),
    #[error("cannot print JSON")]
    Json(#[source] serde_json::Error),
}

/// Asks the debug server and renders the answer: one Proxy with NAME, else a
/// `ListProxiesResponse` (`proxies: [...]`).
/// With mTLS, `tls` must hold an admin certificate (`kgw-admin`).
pub async fn fetch_and_render(args: &ProxiesArgs, tls: &TlsMode) -> Result<String, DebugClientError> {
    let addr = args.debug_addr.trim_start_matches("http://");
    let channel = kgw_common::tls::client::grpc_channel(addr, tls, kgw_proto::nats::users::CONTROLLER, |e| e)
        .map_err(DebugClientError::Address)?;
    let mut client = ProxyDebugServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    match &args.name {
        Some(name) => {
            let namespace = if args.namespace.is_empty() {
                "default"
            } else {
                &args.namespace
            };
            let response = client
                .get_proxy(pb::GetProxyRequest {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                })
                .await
                .map_err(DebugClientError::Call)?;
            render(&response.into_inner().proxy.unwrap_or_default(), args.output)
        }
        None => {
            let response = client
                .list_proxies(pb::ListProxiesRequest {
                    namespace: args.namespace.clone(),
                })
                .await
                .map_err(DebugClientError::Call)?;
            render(&response.into_inner(), args.output)
        }
    }
}

pub fn render<T: serde::Serialize>(value: &T, output: Output) -> Result<String, DebugClientError> {
    match output {
        Output::Yaml => serde_yaml::to_string(value).map_err(DebugClientError::Yaml),
        Output::Json => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(DebugClientError::Json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(namespace: &str, name: &str) -> pb::Proxy {
        pb::Proxy {
            metadata: Some(pb::Metadata {
                namespace: namespace.into(),
                name: name.into(),
                ..Default::default()
            }),
            listeners: vec![pb::Listener {
                name: "listener~8080".into(),
                bind_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A server on 127.0.0.1:0 over the given proxies, and the address it serves on.
    async fn server(
        proxies: &[pb::Proxy],
    ) -> (
        String,
        watch::Sender<Arc<BTreeMap<String, pb::Proxy>>>,
        kgw_common::shutdown::Shutdown,
    ) {
        let map = proxies
            .iter()
            .map(|p| {
                let m = p.metadata.clone().unwrap_or_default();
                (kgw_proto::nats::key(&m.namespace, &m.name), p.clone())
            })
            .collect();
        let (tx, rx) = watch::channel(Arc::new(map));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = kgw_common::shutdown::Shutdown::new();
        let stop = shutdown.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ProxyDebug::new(rx).into_server())
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
                    stop.wait().await
                }),
        );
        (addr, tx, shutdown)
    }

    fn args(addr: &str, namespace: &str, name: Option<&str>, output: Output) -> ProxiesArgs {
        ProxiesArgs {
            namespace: namespace.into(),
            name: name.map(Into::into),
            output,
            debug_addr: addr.into(),
        }
    }

    #[tokio::test]
    async fn lists_and_gets_over_grpc() {
        let (addr, tx, shutdown) = server(&[proxy("default", "gw"), proxy("team-a", "edge")]).await;
        let mut client = ProxyDebugServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();

        let all = client
            .list_proxies(pb::ListProxiesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.proxies, vec![proxy("default", "gw"), proxy("team-a", "edge")]);
        let some = client
            .list_proxies(pb::ListProxiesRequest {
                namespace: "team-a".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(some.proxies, vec![proxy("team-a", "edge")]);

        let one = client
            .get_proxy(pb::GetProxyRequest {
                namespace: "default".into(),
                name: "gw".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(one.proxy, Some(proxy("default", "gw")));

        let missing = client
            .get_proxy(pb::GetProxyRequest {
                namespace: "default".into(),
                name: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert!(missing.message().contains("default/nope"), "{}", missing.message());

        // The service follows what the actor publishes.
        tx.send_replace(Arc::new(BTreeMap::new()));
        let none = client
            .list_proxies(pb::ListProxiesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(none.proxies.is_empty());
        shutdown.trigger();
    }

    #[tokio::test]
    async fn cli_renders_yaml_and_json() {
        let (addr, _tx, shutdown) = server(&[proxy("default", "gw")]).await;

        let yaml = fetch_and_render(&args(&addr, "default", Some("gw"), Output::Yaml), &TlsMode::Insecure)
            .await
            .unwrap();
        let back: pb::Proxy = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, proxy("default", "gw"));
        assert!(yaml.contains("bindPort: 8080"), "{yaml}");

        let json = fetch_and_render(&args(&addr, "", None, Output::Json), &TlsMode::Insecure)
            .await
            .unwrap();
        let back: pb::ListProxiesResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back.proxies, vec![proxy("default", "gw")]);

        let error = fetch_and_render(&args(&addr, "default", Some("nope"), Output::Yaml), &TlsMode::Insecure)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("proxy default/nope not found"), "{error}");
        // NAME without a namespace: `default`, as kubectl.
        let yaml = fetch_and_render(&args(&addr, "", Some("gw"), Output::Yaml), &TlsMode::Insecure)
            .await
            .unwrap();
        assert_eq!(
            serde_yaml::from_str::<pb::Proxy>(&yaml).unwrap(),
            proxy("default", "gw")
        );
        shutdown.trigger();
    }
}
