//! Who is who under mTLS: the one place where certificate names are written.
//!
//! Every certificate is signed by the deployment's CA. A client's identity is its
//! certificate's common name; a server is verified by a fixed DNS name under
//! [`TRUST_DOMAIN`] (its certificate carries that name beside its real host names), so a
//! client checks *which process* answers whatever address it dialled.
//!
//! | who | common name | server name |
//! |---|---|---|
//! | one of our processes | `kgw-process:<name>` | `<name>.kgw.internal` |
//! | an Envoy serving role `<ns>~<gateway>` | `kgw-proxy:<ns>~<gateway>` | — |
//! | an operator or a test (any port) | `kgw-admin` | — |
//! | nats-server | — | `nats.kgw.internal` |

/// The DNS suffix of our servers' verified names.
pub const TRUST_DOMAIN: &str = "kgw.internal";
/// The processes that hold a certificate of their own.
pub const PROCESSES: [&str; 4] = ["gateway", "controller", "discovery", "access-log"];
/// The name nats-server's certificate carries.
pub const NATS_SERVER_NAME: &str = "nats.kgw.internal";

const PROCESS_PREFIX: &str = "kgw-process:";
const PROXY_PREFIX: &str = "kgw-proxy:";
const ADMIN: &str = "kgw-admin";

/// A verified client.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identity {
    /// One of [`PROCESSES`].
    Process(String),
    /// An Envoy that may read only the Proxy of this role (`<ns>~<gateway>`).
    Proxy { role: String },
    /// An operator's or a test's certificate: may use every port.
    Admin,
}

impl Identity {
    /// The common name a certificate for this identity carries.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Process(name) => format!("{PROCESS_PREFIX}{name}"),
            Identity::Proxy { role } => format!("{PROXY_PREFIX}{role}"),
            Identity::Admin => ADMIN.to_string(),
        }
    }

    /// The identity a common name stands for; `None` for any other name.
    pub fn from_common_name(name: &str) -> Option<Self> {
        if name == ADMIN {
            return Some(Identity::Admin);
        }
        if let Some(process) = name.strip_prefix(PROCESS_PREFIX) {
            return PROCESSES
                .contains(&process)
                .then(|| Identity::Process(process.to_string()));
        }
        let role = name.strip_prefix(PROXY_PREFIX)?;
        crate::nats::role_to_key(role).map(|_| Identity::Proxy { role: role.to_string() })
    }

    /// Whether this identity may be served the Envoy config of `role`.
    pub fn may_read_role(&self, role: &str) -> bool {
        match self {
            Identity::Admin => true,
            Identity::Proxy { role: own } => own == role,
            Identity::Process(_) => false,
        }
    }

    /// Whether this is the process `name` (or an admin).
    pub fn is_process_or_admin(&self, name: &str) -> bool {
        match self {
            Identity::Admin => true,
            Identity::Process(own) => own == name,
            Identity::Proxy { .. } => false,
        }
    }

    /// Whether this is an Envoy (of any role) or an admin.
    pub fn is_proxy_or_admin(&self) -> bool {
        matches!(self, Identity::Admin | Identity::Proxy { .. })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.common_name())
    }
}

/// The verified DNS name of process `name`'s servers (`controller.kgw.internal`).
pub fn server_name(process: &str) -> String {
    format!("{process}.{TRUST_DOMAIN}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_round_trip() {
        for identity in [
            Identity::Process("controller".into()),
            Identity::Proxy {
                role: "default~gw.a".into(),
            },
            Identity::Admin,
        ] {
            assert_eq!(Identity::from_common_name(&identity.common_name()), Some(identity));
        }
        assert_eq!(Identity::from_common_name("kgw-process:mallory"), None);
        assert_eq!(Identity::from_common_name("kgw-proxy:nogateway"), None);
        assert_eq!(Identity::from_common_name("CN=whatever"), None);
    }

    #[test]
    fn a_proxy_reads_only_its_role() {
        let proxy = Identity::Proxy { role: "a~gw".into() };
        assert!(proxy.may_read_role("a~gw"));
        assert!(!proxy.may_read_role("b~gw"));
        assert!(Identity::Admin.may_read_role("b~gw"));
        assert!(!Identity::Process("gateway".into()).may_read_role("a~gw"));
        assert!(Identity::Process("gateway".into()).is_process_or_admin("gateway"));
        assert!(!proxy.is_process_or_admin("gateway"));
    }
}
