//! How an Envoy reaches our ports with its client certificate: TLS transport sockets whose
//! certificate and CA come from SDS files beside the certificate (Envoy re-reads them when
//! the folder changes, so certificates rotate without a restart). The same function serves
//! the bootstrap's xDS cluster and the clusters of the access-log sink and the WASM cache.
use envoy_types::pb::{
    envoy::{
        config::core::v3::{
            ConfigSource, DataSource, PathConfigSource, TransportSocket, WatchedDirectory, config_source, data_source,
            transport_socket,
        },
        extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, SdsSecretConfig, Secret, SubjectAltNameMatcher,
            TlsCertificate, UpstreamTlsContext, common_tls_context, secret, subject_alt_name_matcher,
        },
        r#type::matcher::v3::{StringMatcher, string_matcher},
    },
    google::protobuf::Any,
};
use envoy_types::util::pack_any;

/// The SDS secret of the Envoy's certificate and key.
pub const CERT_SECRET: &str = "kgw-proxy-cert";
/// The SDS secret of the CA that signs our servers' certificates.
pub const CA_SECRET: &str = "kgw-ca";
/// The SDS files (JSON `DiscoveryResponse`s) in the SDS folder.
pub const CERT_SDS_FILE: &str = "sds-cert.json";
pub const CA_SDS_FILE: &str = "sds-ca.json";

/// Where Envoys keep their SDS files. `{role}` is replaced by the Envoy's role
/// (`<namespace>~<gateway>`), for hosts that run Envoys of several roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTls {
    pub sds_dir: String,
}

impl ProxyTls {
    /// The SDS folder of the Envoys of `role`.
    pub fn sds_dir_of(&self, role: &str) -> String {
        self.sds_dir.replace("{role}", role)
    }
}

fn sds(name: &str, dir: &str, file: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ConfigSource {
            resource_api_version: 2, // V3
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::PathConfigSource(
                PathConfigSource {
                    path: format!("{dir}/{file}"),
                    watched_directory: Some(WatchedDirectory {
                        path: dir.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
    }
}

/// A TLS transport socket to our process `server_process`: the Envoy's certificate and our
/// CA from the SDS files in `sds_dir`; the server must present
/// `<server_process>.kgw.internal`.
pub fn transport_socket(sds_dir: &str, server_process: &str) -> TransportSocket {
    let server_name = kgw_proto::identity::server_name(server_process);
    let context = UpstreamTlsContext {
        sni: server_name.clone(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(CERT_SECRET, sds_dir, CERT_SDS_FILE)],
            validation_context_type: Some(common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                            san_type: subject_alt_name_matcher::SanType::Dns as i32,
                            matcher: Some(StringMatcher {
                                match_pattern: Some(string_matcher::MatchPattern::Exact(server_name)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(CA_SECRET, sds_dir, CA_SDS_FILE)),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    }
}

fn file(path: String) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(path)),
        ..Default::default()
    })
}

/// The SDS files' secrets for certificates in `tls_dir` (`tls.crt`, `tls.key`, `ca.crt`):
/// `(file name, secret)`. Written as `{"resources": [<secret as Any>]}`.
pub fn sds_secrets(tls_dir: &str) -> [(&'static str, Any); 2] {
    let watched = Some(WatchedDirectory {
        path: tls_dir.into(),
        ..Default::default()
    });
    let cert = Secret {
        name: CERT_SECRET.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: file(format!("{tls_dir}/tls.crt")),
            private_key: file(format!("{tls_dir}/tls.key")),
            watched_directory: watched.clone(),
            ..Default::default()
        })),
    };
    let ca = Secret {
        name: CA_SECRET.into(),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: file(format!("{tls_dir}/ca.crt")),
            watched_directory: watched,
            ..Default::default()
        })),
    };
    [(CERT_SDS_FILE, pack_any(cert)), (CA_SDS_FILE, pack_any(ca))]
}
