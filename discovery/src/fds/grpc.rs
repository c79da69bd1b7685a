//! The gRPC detector: server reflection, `grpc.reflection.v1` first and `v1alpha` when the
//! server does not implement v1 (grpc-go before 1.57, most older servers). Lists the
//! services (less the reflection services), fetches the files that define them and,
//! file by file, their dependencies, and turns each method into a function. The files are
//! kept as the server sent them (unknown fields, such as `google.api.http` options, intact)
//! in one FileDescriptorSet, dependencies first, for Envoy's gRPC-JSON transcoder.
use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{StreamExt as _, stream::BoxStream};
use kgw_proto::v1::{Function, GrpcFunction, function::Spec};
use prost::Message as _;
use prost_types::FileDescriptorProto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, transport::Channel};

use super::{
    FdsError, ProbeConfig, http,
    tls::{self, Alpn},
};

pub(crate) const KIND: &str = "grpc";
/// At most this many files per upstream: a bound on the dependency walk.
const MAX_FILES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("invalid endpoint")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot connect")]
    Connect(#[source] tonic::transport::Error),
    #[error("reflection call failed")]
    Status(#[source] Status),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the reflection stream")]
    Closed,
    #[error("the server answered {0} instead of the expected response")]
    Unexpected(&'static str),
    #[error("cannot decode file descriptor")]
    Descriptor(#[source] prost::DecodeError),
    #[error("more than {MAX_FILES} files or {0} bytes of descriptors")]
    TooLarge(usize),
}

/// What reflection found.
pub(crate) struct Found {
    pub(crate) functions: Vec<Function>,
    /// Encoded `google.protobuf.FileDescriptorSet`.
    pub(crate) descriptors: Vec<u8>,
    pub(crate) version: &'static str,
}

/// Reflection on `addr` (h2c, or HTTP/2 over TLS when `tls` says). `Ok(None)`: a gRPC
/// server, but without reflection.
pub(crate) async fn detect(
    addr: SocketAddr,
    tls: Option<http::Tls<'_>>,
    config: &ProbeConfig,
) -> Result<Option<Found>, FdsError> {
    let error = |source| FdsError::Grpc { addr, source };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| error(GrpcError::Endpoint(e)))?
        .connect_timeout(config.request_timeout);
    let connect = async {
        match tls {
            None => endpoint.connect().await,
            Some(tls) => {
                let connector = TlsConnect {
                    addr,
                    server_name: Arc::from(tls.server_name),
                    skip_verify: tls.skip_verify,
                };
                endpoint.connect_with_connector(connector).await
            }
        }
    };
    // The TCP connect has its own timeout; this one also bounds the HTTP/2 handshake.
    let channel = tokio::time::timeout(config.request_timeout, connect)
        .await
        .map_err(|_| error(GrpcError::Timeout(config.request_timeout)))?
        .map_err(|e| error(GrpcError::Connect(e)))?;
    for version in [Version::V1, Version::V1Alpha] {
        match walk(channel.clone(), version, config).await {
            Ok(found) => return Ok(Some(found)),
            Err(GrpcError::Status(status)) if status.code() == Code::Unimplemented => {
                tracing::debug!(%addr, version = version.name(), "reflection not implemented");
            }
            Err(source) => return Err(error(source)),
        }
    }
    Ok(None)
}

/// Connects tonic's channel over TLS (ALPN h2) to one address, whatever the URI says.
#[derive(Clone)]
struct TlsConnect {
    addr: SocketAddr,
    server_name: Arc<str>,
    skip_verify: bool,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tonic::codegen::Service<hyper::Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: hyper::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(this.addr).await?;
            let _ = stream.set_nodelay(true);
            let stream = tls::connect(stream, this.addr, &this.server_name, this.skip_verify, Alpn::H2).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

#[derive(Clone, Copy)]
enum Version {
    V1,
    V1Alpha,
}

impl Version {
    fn name(self) -> &'static str {
        match self {
            Self::V1 => "grpc.reflection.v1",
            Self::V1Alpha => "grpc.reflection.v1alpha",
        }
    }
}

/// A reflection request, whatever the version.
enum Ask {
    ListServices,
    Symbol(String),
    File(String),
}

/// A reflection response, whatever the version.
enum Answer {
    Services(Vec<String>),
    Files(Vec<Vec<u8>>),
    Error { code: i32, message: String },
    Other,
}

/// One bidirectional reflection stream: one request at a time, each answered in order.
struct Session {
    asks: mpsc::Sender<Ask>,
    answers: BoxStream<'static, Result<Answer, Status>>,
    timeout: Duration,
}

/// The v1 and v1alpha messages have the same shape in different modules: one body for both.
macro_rules! open_session {
    ($pb:ident, $channel:expr, $first:expr, $limit:expr) => {{
        use tonic_reflection::pb::$pb::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let (asks, rx) = mpsc::channel::<Ask>(1);
        // Queued before the call: some servers send headers only with the first answer.
        asks.try_send($first).map_err(|_| GrpcError::Closed)?;
        let requests = ReceiverStream::new(rx).map(|ask| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(match ask {
                Ask::ListServices => MessageRequest::ListServices(String::new()),
                Ask::Symbol(symbol) => MessageRequest::FileContainingSymbol(symbol),
                Ask::File(file) => MessageRequest::FileByFilename(file),
            }),
        });
        let mut client = ServerReflectionClient::new($channel).max_decoding_message_size($limit);
        let responses = client
            .server_reflection_info(requests)
            .await
            .map_err(GrpcError::Status)?
            .into_inner();
        let answers = responses.map(|response| {
            response.map(|r| match r.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    Answer::Services(list.service.into_iter().map(|s| s.name).collect())
                }
                Some(MessageResponse::FileDescriptorResponse(files)) => Answer::Files(files.file_descriptor_proto),
                Some(MessageResponse::ErrorResponse(e)) => Answer::Error {
                    code: e.error_code,
                    message: e.error_message,
                },
                _ => Answer::Other,
            })
        });
        (asks, answers.boxed())
    }};
}

impl Session {
    async fn open(channel: Channel, version: Version, first: Ask, config: &ProbeConfig) -> Result<Self, GrpcError> {
        let limit = config.max_body_bytes;
        let open = async {
            Ok::<_, GrpcError>(match version {
                Version::V1 => open_session!(v1, channel, first, limit),
                Version::V1Alpha => open_session!(v1alpha, channel, first, limit),
            })
        };
        let (asks, answers) = tokio::time::timeout(config.request_timeout, open)
            .await
            .map_err(|_| GrpcError::Timeout(config.request_timeout))??;
        Ok(Self {
            asks,
            answers,
            timeout: config.request_timeout,
        })
    }

    /// The answer to the request already sent.
    async fn answer(&mut self) -> Result<Answer, GrpcError> {
        match tokio::time::timeout(self.timeout, self.answers.next()).await {
            Err(_) => Err(GrpcError::Timeout(self.timeout)),
            Ok(None) => Err(GrpcError::Closed),
            Ok(Some(answer)) => answer.map_err(GrpcError::Status),
        }
    }

    async fn ask(&mut self, ask: Ask) -> Result<Answer, GrpcError> {
        self.asks.send(ask).await.map_err(|_| GrpcError::Closed)?;
        self.answer().await
    }
}

/// The files fetched so far: raw bytes as sent, and the decoded header we need.
#[derive(Default)]
struct Files {
    raw: BTreeMap<String, Vec<u8>>,
    decoded: BTreeMap<String, FileDescriptorProto>,
    bytes: usize,
}

impl Files {
    fn add(&mut self, raws: Vec<Vec<u8>>, limit: usize) -> Result<(), GrpcError> {
        for raw in raws {
            let file = FileDescriptorProto::decode(raw.as_slice()).map_err(GrpcError::Descriptor)?;
            let name = file.name().to_string();
            if self.raw.contains_key(&name) {
                continue;
            }
            self.bytes += raw.len();
            if self.bytes > limit || self.raw.len() >= MAX_FILES {
                return Err(GrpcError::TooLarge(limit));
            }
            self.raw.insert(name.clone(), raw);
            self.decoded.insert(name, file);
        }
        Ok(())
    }

    fn defines_service(&self, full_name: &str) -> bool {
        self.decoded
            .values()
            .any(|f| f.service.iter().any(|s| qualified(f.package(), s.name()) == full_name))
    }

    /// Dependencies named but not fetched yet.
    fn missing(&self) -> BTreeSet<String> {
        self.decoded
            .values()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !self.raw.contains_key(*d))
            .cloned()
            .collect()
    }
}

async fn walk(channel: Channel, version: Version, config: &ProbeConfig) -> Result<Found, GrpcError> {
    let mut session = Session::open(channel, version, Ask::ListServices, config).await?;
    let services: BTreeSet<String> = match session.answer().await? {
        Answer::Services(names) => names
            .into_iter()
            .filter(|name| !name.starts_with("grpc.reflection."))
            .collect(),
        Answer::Error { code, message } => {
            return Err(GrpcError::Status(Status::new(Code::from_i32(code), message)));
        }
        _ => return Err(GrpcError::Unexpected("something else than a service list")),
    };
    let mut files = Files::default();
    for service in &services {
        if files.defines_service(service) {
            continue;
        }
        match session.ask(Ask::Symbol(service.clone())).await? {
            Answer::Files(raws) => files.add(raws, config.max_descriptor_bytes)?,
            Answer::Error { code, message } => {
                tracing::debug!(service, code, message, "server cannot describe its own service");
            }
            _ => return Err(GrpcError::Unexpected("something else than files")),
        }
    }
    // Each round asks for the dependencies the last one revealed; MAX_FILES bounds it.
    let mut unavailable = BTreeSet::new();
    loop {
        let missing: Vec<String> = files.missing().difference(&unavailable).cloned().collect();
        if missing.is_empty() {
            break;
        }
        for name in missing {
            match session.ask(Ask::File(name.clone())).await? {
                Answer::Files(raws) => files.add(raws, config.max_descriptor_bytes)?,
                Answer::Error { code, message } => {
                    tracing::debug!(file = name, code, message, "dependency not available");
                }
                _ => return Err(GrpcError::Unexpected("something else than files")),
            }
            if !files.raw.contains_key(&name) {
                unavailable.insert(name);
            }
        }
    }
    if !unavailable.is_empty() {
        tracing::warn!(files = ?unavailable, "descriptor set incomplete: the server did not send these dependencies");
    }
    Ok(Found {
        functions: functions(&files.decoded, &services),
        descriptors: descriptor_set(&files),
        version: version.name(),
    })
}

fn qualified(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_string()
    } else {
        format!("{package}.{name}")
    }
}

/// One function per method of each listed service, sorted by name
/// (`package.Service/Method`).
fn functions(files: &BTreeMap<String, FileDescriptorProto>, services: &BTreeSet<String>) -> Vec<Function> {
    let mut out = Vec::new();
    for file in files.values() {
        for service in &file.service {
            let full = qualified(file.package(), service.name());
            if !services.contains(&full) {
                continue;
            }
            for method in &service.method {
                out.push(Function {
                    name: format!("{full}/{}", method.name()),
                    kind: KIND.to_string(),
                    spec: Some(Spec::Grpc(GrpcFunction {
                        service: full.clone(),
                        method: method.name().to_string(),
                        input_type: method.input_type().trim_start_matches('.').to_string(),
                        output_type: method.output_type().trim_start_matches('.').to_string(),
                        client_streaming: method.client_streaming(),
                        server_streaming: method.server_streaming(),
                    })),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

/// The files as an encoded FileDescriptorSet, each after its dependencies (as protoc
/// writes them), ties by name. Written field by field so the server's bytes stay intact.
fn descriptor_set(files: &Files) -> Vec<u8> {
    fn visit<'a>(name: &'a str, files: &'a Files, done: &mut BTreeSet<&'a str>, out: &mut Vec<u8>) {
        if !done.insert(name) {
            return;
        }
        let Some(file) = files.decoded.get(name) else { return };
        for dependency in &file.dependency {
            visit(dependency, files, done, out);
        }
        if let Some(raw) = files.raw.get(name) {
            prost::encoding::bytes::encode(1, raw, out);
        }
    }
    let mut out = Vec::with_capacity(files.bytes + 8 * files.raw.len());
    let mut done = BTreeSet::new();
    for name in files.raw.keys() {
        visit(name, files, &mut done, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use prost_types::{FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto};

    use super::*;

    fn file(name: &str, package: &str, deps: &[&str], services: &[(&str, &[&str])]) -> Vec<u8> {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            service: services
                .iter()
                .map(|(s, methods)| ServiceDescriptorProto {
                    name: Some(s.to_string()),
                    method: methods
                        .iter()
                        .map(|m| MethodDescriptorProto {
                            name: Some(m.to_string()),
                            input_type: Some(format!(".{package}.Req")),
                            output_type: Some(format!(".{package}.Resp")),
                            server_streaming: Some(*m == "Watch"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn descriptor_set_puts_dependencies_first_and_keeps_bytes() {
        let mut files = Files::default();
        let a = file("a.proto", "pkg", &["c.proto", "b.proto"], &[("Svc", &["Get", "Watch"])]);
        let b = file("b.proto", "pkg", &["c.proto"], &[]);
        let c = file("c.proto", "pkg", &[], &[]);
        files.add(vec![a.clone(), b.clone(), c.clone()], 1 << 20).expect("adds");
        assert!(files.missing().is_empty());
        let set = FileDescriptorSet::decode(descriptor_set(&files).as_slice()).expect("decodes");
        let names: Vec<_> = set.file.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["c.proto", "b.proto", "a.proto"]);

        let services = BTreeSet::from(["pkg.Svc".to_string()]);
        let functions = functions(&files.decoded, &services);
        let names: Vec<_> = functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["pkg.Svc/Get", "pkg.Svc/Watch"]);
        let Some(Spec::Grpc(watch)) = &functions[1].spec else {
            panic!("grpc")
        };
        assert_eq!(
            (
                watch.input_type.as_str(),
                watch.server_streaming,
                watch.client_streaming
            ),
            ("pkg.Req", true, false)
        );
    }

    #[test]
    fn files_are_bounded() {
        let mut files = Files::default();
        let big = file("big.proto", "p", &[], &[]);
        assert!(matches!(files.add(vec![big], 4), Err(GrpcError::TooLarge(4))));
        assert!(matches!(
            files.add(vec![vec![0xff, 0xff]], 100),
            Err(GrpcError::Descriptor(_))
        ));
    }
}
