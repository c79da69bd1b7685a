//! The real [`Validator`]: the controller's `kgw.v1.ValidationService` (port 9988): `Validate`
//! dry-runs a Proxy, `ServedProblems` answers for the one it serves.
//! The only place the validation's protobuf messages are built and read.
use std::time::Duration;

use kgw_common::tls::TlsMode;
use kgw_proto::v1::{self as pb, validation_service_client::ValidationServiceClient};
use tonic::transport::Channel;

use super::{DryRun, Finding, Served, Severity, Validator, ValidatorError, resource_id};

/// Default address of the controller's validation service in local mode.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9988";

/// A gRPC client of the controller's ValidationService. Connects lazily and reconnects on
/// its own, so it can be made before the controller is up.
#[derive(Clone, Debug)]
pub struct GrpcValidator {
    addr: String,
    client: ValidationServiceClient<Channel>,
}

impl GrpcValidator {
    /// `addr` is `host:port` (or `http://host:port`). With mTLS the controller must present
    /// `controller.kgw.internal`. Call inside a tokio runtime.
    pub fn new(addr: &str, timeout: Duration, tls: &TlsMode) -> Result<Self, ValidatorError> {
        let host_port = addr.trim_start_matches("http://");
        let channel = kgw_common::tls::client::grpc_channel(host_port, tls, kgw_proto::nats::users::CONTROLLER, |e| {
            e.connect_timeout(Duration::from_secs(2)).timeout(timeout)
        })
        .map_err(|source| ValidatorError::Address {
            addr: addr.to_string(),
            source,
        })?;
        Ok(Self {
            addr: addr.to_string(),
            client: ValidationServiceClient::new(channel),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Validator for GrpcValidator {
    async fn validate(&self, dry_run: DryRun) -> Result<Vec<Finding>, ValidatorError> {
        let request = pb::ValidateRequest {
            proxy: Some(dry_run.proxy),
            upstreams: dry_run.upstreams,
            deleted_upstreams: dry_run
                .deleted_upstreams
                .into_iter()
                .map(|(namespace, name)| pb::ResourceRef {
                    kind: "Upstream".into(),
                    namespace,
                    name,
                })
                .collect(),
            include_resources: false,
        };
        let response = self
            .client
            .clone()
            .validate(request)
            .await
            .map_err(|source| self.error(source))?;
        Ok(response.into_inner().problems.into_iter().map(finding).collect())
    }

    async fn served(&self, key: &str, digest: &str) -> Result<Served, ValidatorError> {
        let request = pb::ServedProblemsRequest {
            proxy_key: key.to_string(),
            digest: digest.to_string(),
        };
        match self.client.clone().served_problems(request).await {
            Ok(response) => Ok(Served::Findings(
                response.into_inner().problems.into_iter().map(finding).collect(),
            )),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(Served::NotYet),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(Served::Unsupported),
            Err(status) => Err(self.error(status)),
        }
    }
}

impl GrpcValidator {
    fn error(&self, source: tonic::Status) -> ValidatorError {
        let addr = self.addr.clone();
        match source.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                ValidatorError::Unreachable {
                    addr,
                    detail: root_cause(&source),
                    source,
                }
            }
            _ => ValidatorError::Failed { addr, source },
        }
    }
}

/// The innermost error under a status (the OS error of a failed connect), else its message.
fn root_cause(status: &tonic::Status) -> String {
    let mut cause: &dyn std::error::Error = status;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if std::ptr::addr_eq(cause, status as &dyn std::error::Error) {
        status.message().to_string()
    } else {
        format!("{}: {cause}", status.message())
    }
}

fn finding(problem: pb::Problem) -> Finding {
    let severity = match problem.severity() {
        pb::problem::Severity::Warning => Severity::Warning,
        pb::problem::Severity::Error => Severity::Error,
    };
    let resource = problem
        .source
        .as_ref()
        .map(|s| resource_id(&s.kind, &s.namespace, &s.name))
        .unwrap_or_default();
    Finding {
        severity,
        resource,
        path: problem.path,
        message: problem.message,
    }
}
