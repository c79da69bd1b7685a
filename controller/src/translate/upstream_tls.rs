//! TLS to a backend a BackendTLSPolicy covers (`Destination.tls`): the Upstream gets a
//! cluster of its own per TLS setting, `<cluster>~tls~<digest>`, so the same Upstream
//! reached in plain text elsewhere keeps its cluster. Envoy sends the policy's hostname as
//! SNI and checks the backend's certificate against the CAs (inline: CA data is not secret)
//! and the subject alt names (the hostname when the policy lists none); it presents the
//! Gateway's client certificate, when the Proxy names one, over SDS.
use envoy_types::pb::envoy::{
    config::core::v3::{DataSource, TransportSocket, data_source, transport_socket},
    extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher, UpstreamTlsContext,
        common_tls_context, subject_alt_name_matcher::SanType,
    },
    r#type::matcher::v3::{StringMatcher, string_matcher},
};
use envoy_types::util::pack_any;
use kgw_proto::v1 as pb;
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use super::listeners::ads_config_source;

/// The system CA bundle Envoy reads for `wellKnownCACertificates: System`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a TLS cluster is made of: the destination's TLS and the Proxy's client certificate.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClusterTls {
    pub(crate) tls: pb::UpstreamTls,
    /// SDS name of the client certificate (`<namespace>/<name>`).
    pub(crate) client_certificate: Option<String>,
}

/// The cluster of Upstream cluster `base` with `tls`: named after a digest of the TLS
/// setting (the policy reference left out: two policies asking the same share a cluster).
pub(crate) fn cluster_name(base: &str, tls: &pb::UpstreamTls) -> String {
    let setting = pb::UpstreamTls {
        policy: None,
        ..tls.clone()
    };
    let digest = Sha256::digest(setting.encode_to_vec());
    format!("{base}~tls~{}", hex::encode(&digest[..6]))
}

/// The TLS transport socket of a cluster made with `tls`.
pub(crate) fn transport_socket(cluster: &ClusterTls) -> TransportSocket {
    let tls = &cluster.tls;
    let exact = |value: &str| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_string())),
        ..Default::default()
    };
    let san = |san_type: SanType, value: &str| SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(exact(value)),
        ..Default::default()
    };
    let names: Vec<SubjectAltNameMatcher> = if tls.subject_alt_names.is_empty() {
        vec![san(SanType::Dns, &tls.sni)]
    } else {
        tls.subject_alt_names
            .iter()
            .filter_map(|s| match s.name.as_ref()? {
                pb::subject_alt_name::Name::Hostname(h) => Some(san(SanType::Dns, h)),
                pb::subject_alt_name::Name::Uri(u) => Some(san(SanType::Uri, u)),
            })
            .collect()
    };
    let trusted_ca = if tls.ca_certificates.is_empty() && tls.system_ca {
        data_source::Specifier::Filename(SYSTEM_CA_BUNDLE.into())
    } else {
        // Each PEM bundle ends with a newline, so they concatenate into one bundle.
        let bundle: String = tls
            .ca_certificates
            .iter()
            .map(|pem| {
                if pem.ends_with('\n') {
                    pem.clone()
                } else {
                    format!("{pem}\n")
                }
            })
            .collect();
        data_source::Specifier::InlineString(bundle)
    };
    let context = UpstreamTlsContext {
        sni: tls.sni.clone(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: cluster
                .client_certificate
                .iter()
                .map(|name| SdsSecretConfig {
                    name: name.clone(),
                    sds_config: Some(ads_config_source()),
                })
                .collect(),
            validation_context_type: Some(common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(trusted_ca),
                        ..Default::default()
                    }),
                    match_typed_subject_alt_names: names,
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
