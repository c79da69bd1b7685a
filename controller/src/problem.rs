//! What a translation could not do as asked. Its own module: the translation makes
//! problems, and the Proxy store keeps those of each Proxy's last translation for
//! validation (`proxies::ServedProblems`), without either depending on the other for it.
use kgw_proto::v1 as pb;

/// Something the translation could not do as asked; reported to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// Where in the Proxy, e.g. `listener/listener~8080/vhost/x/route/y`.
    pub path: String,
    pub source: Option<pb::ResourceRef>,
    pub message: String,
}

impl Problem {
    /// The report form, as published to the gateway and answered by validation.
    pub fn to_proto(self) -> pb::Problem {
        pb::Problem {
            severity: match self.severity {
                Severity::Error => pb::problem::Severity::Error,
                Severity::Warning => pb::problem::Severity::Warning,
            } as i32,
            path: self.path,
            source: self.source,
            message: self.message,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}
