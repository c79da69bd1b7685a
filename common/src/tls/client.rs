//! Clients of our ports: gRPC channels that present our certificate and check the server's
//! verified name, reading the current certificates at every (re)connection.
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

use super::{Mtls, TlsMode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid address {addr:?}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// A lazily connecting gRPC channel to `addr` (`host:port`), served by process
/// `server_process` (its certificate must carry [`kgw_proto::identity::server_name`]).
pub fn grpc_channel(
    addr: &str,
    mode: &TlsMode,
    server_process: &str,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, ClientError> {
    let url = format!("http://{addr}");
    let endpoint = Endpoint::from_shared(url).map_err(|source| ClientError::Address {
        addr: addr.to_string(),
        source,
    })?;
    let endpoint = configure(endpoint);
    let Some(mtls) = mode.mtls() else {
        return Ok(endpoint.connect_lazy());
    };
    let name = kgw_proto::identity::server_name(server_process);
    let server_name = ServerName::try_from(name.clone()).map_err(|_| ClientError::ServerName(name))?;
    Ok(endpoint.connect_with_connector_lazy(connector(mtls.clone(), server_name)))
}

type Connected = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn connector(
    mtls: Mtls,
    server_name: ServerName<'static>,
) -> impl tower::Service<
    http::Uri,
    Response = Connected,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<Connected>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: http::Uri| {
        let (mtls, server_name) = (mtls.clone(), server_name.clone());
        async move {
            let host = uri
                .host()
                .unwrap_or("127.0.0.1")
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(mtls.client_config())
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        }
    })
}
