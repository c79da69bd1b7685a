//! The certificates the conformance suite creates in code (`suite.Setup`,
//! `conformance/utils/kubernetes/certificate.go`; README §6), generated in-process, and the
//! Secrets / ConfigMaps that carry them.
//!
//! Differences from the Go suite, on purpose:
//! * Keys are ECDSA P-256 (PKCS#8 `PRIVATE KEY` PEM), not RSA-2048 (`RSA PRIVATE KEY`):
//!   rcgen with the `ring` backend cannot generate RSA keys (`KeyGenerationUnavailable`).
//!   Envoy, rustls and Go accept both.
//! * `tls-validity-checks-certificate` (every HTTPS listener's certificate, and the root
//!   the client trusts) has, besides the suite's `*.org` / `*.wildcard.org`, explicit DNS
//!   names for every `<name>.org` host the cases and manifests use, and `*.example.org`:
//!   webpki (rustls) requires two labels after a wildcard, so it skips `*.org` where Go
//!   matches it. It stays a non-CA leaf: webpki accepts any certificate as a trust anchor
//!   but refuses a CA certificate as the end entity (`CaUsedAsEndEntity`).
//! * The host `*` (Go turns it into a URI SAN) is left out: it names nothing.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::TlsPair;

const INFRA: &str = "gateway-conformance-infra";
const WEB_BACKEND: &str = "gateway-conformance-web-backend";
const APP_BACKEND: &str = "gateway-conformance-app-backend";

/// DNS SANs of `tls-validity-checks-certificate`: the suite's hosts `*.org` and
/// `*.wildcard.org`, then what rustls needs spelt out (see the module docs).
pub const HTTPS_LISTENER_SANS: &[&str] = &[
    "*.org",
    "*.wildcard.org",
    "example.org",
    "first-example.org",
    "second-example.org",
    "third-example.org",
    "fourth-example.org",
    "fith-example.org",
    "unknown-example.org",
    "https-listener.org",
    "*.example.org",
];

/// A CA: its certificate PEM and what signs with it.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

/// Every Secret and ConfigMap of README §6's table.
pub struct ConformancePki {
    /// (namespace, name, key pair), in the table's order.
    secrets: Vec<(String, String, TlsPair)>,
    /// (namespace, name, `ca.crt`).
    config_maps: Vec<(String, String, String)>,
}

impl ConformancePki {
    /// Generates fresh keys and certificates (a few milliseconds: ECDSA).
    pub fn generate() -> Result<Self> {
        let mut pki = ConformancePki {
            secrets: Vec::new(),
            config_maps: Vec::new(),
        };
        let validity = Validity::one_year();

        // Every HTTPS listener's certificate; the client trusts it directly.
        let listener = self_signed_server(HTTPS_LISTENER_SANS, &validity)?;
        pki.add_secret(INFRA, "tls-validity-checks-certificate", listener);
        // Cross-namespace certificateRef tests: the suite's host `*` (no usable SAN).
        let cross = self_signed_server(&[], &validity)?;
        pki.add_secret(WEB_BACKEND, "certificate", cross);
        let web_ca = Ca::generate(&validity)?;
        pki.add_config_map(WEB_BACKEND, "web-backend-cm", &web_ca.pem);

        // Frontend mTLS: CA #1 (default) and CA #2 (per port), each with a client cert.
        let ca1 = Ca::generate(&validity)?;
        pki.add_config_map(INFRA, "tls-validity-checks-ca-certificate", &ca1.pem);
        pki.add_secret(INFRA, "tls-validity-checks-client-certificate", ca1.client(&validity)?);
        let ca2 = Ca::generate(&validity)?;
        pki.add_config_map(INFRA, "tls-validity-checks-per-port-ca-certificate", &ca2.pem);
        pki.add_secret(
            INFRA,
            "tls-validity-checks-per-port-client-certificate",
            ca2.client(&validity)?,
        );

        // Backend TLS: CA #3, the tls-backend pods' certificate, the gateway's client cert.
        let ca3 = Ca::generate(&validity)?;
        pki.add_config_map(INFRA, "tls-checks-ca-certificate", &ca3.pem);
        let backend_sans = vec![
            SanType::DnsName("abc.example.com".try_into()?),
            SanType::DnsName("other.example.com".try_into()?),
            SanType::URI("spiffe://abc.example.com/test-identity".try_into()?),
        ];
        pki.add_secret(INFRA, "tls-checks-certificate", ca3.server(backend_sans, &validity)?);
        pki.add_secret(INFRA, "tls-checks-client-certificate", ca3.client(&validity)?);
        // TLSRoute tests.
        let abc = || -> Result<Vec<SanType>> { Ok(vec![SanType::DnsName("abc.example.com".try_into()?)]) };
        pki.add_secret(
            INFRA,
            "tls-passthrough-checks-certificate",
            ca3.server(abc()?, &validity)?,
        );
        pki.add_secret(
            APP_BACKEND,
            "tls-passthrough-checks-certificate",
            ca3.server(abc()?, &validity)?,
        );
        let terminate = vec![SanType::DnsName("tls.example.com".try_into()?)];
        pki.add_secret(
            INFRA,
            "tls-terminate-checks-certificate",
            ca3.server(terminate, &validity)?,
        );

        // BackendTLSPolicy certificate mismatch: a CA that signed nothing.
        let mismatch = Ca::generate(&validity)?;
        pki.add_config_map(INFRA, "mismatch-ca-certificate", &mismatch.pem);
        Ok(pki)
    }

    fn add_secret(&mut self, namespace: &str, name: &str, pair: TlsPair) {
        self.secrets.push((namespace.to_string(), name.to_string(), pair));
    }

    fn add_config_map(&mut self, namespace: &str, name: &str, ca_pem: &str) {
        self.config_maps
            .push((namespace.to_string(), name.to_string(), ca_pem.to_string()));
    }

    /// The `kubernetes.io/tls` Secret `namespace/name`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&TlsPair> {
        self.secrets
            .iter()
            .find(|(ns, n, _)| ns == namespace && n == name)
            .map(|(_, _, pair)| pair)
    }

    /// `ca.crt` of the ConfigMap `namespace/name`.
    pub fn config_map_ca(&self, namespace: &str, name: &str) -> Option<&str> {
        self.config_maps
            .iter()
            .find(|(ns, n, _)| ns == namespace && n == name)
            .map(|(_, _, pem)| pem.as_str())
    }

    /// (namespace, name) of every Secret.
    pub fn secret_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.secrets.iter().map(|(ns, n, _)| (ns.as_str(), n.as_str()))
    }

    /// (namespace, name) of every ConfigMap.
    pub fn config_map_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.config_maps.iter().map(|(ns, n, _)| (ns.as_str(), n.as_str()))
    }

    /// Every Secret (`data` base64, as the API server stores it) and ConfigMap, as one
    /// multi-document YAML stream.
    pub fn manifests_yaml(&self) -> String {
        let mut docs: Vec<serde_json::Value> = Vec::new();
        for (namespace, name, pair) in &self.secrets {
            docs.push(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": base64_encode(pair.cert_pem.as_bytes()),
                    "tls.key": base64_encode(pair.key_pem.as_bytes()),
                },
            }));
        }
        for (namespace, name, pem) in &self.config_maps {
            docs.push(serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": {"ca.crt": pem},
            }));
        }
        let mut out = String::new();
        for doc in docs {
            out.push_str("---\n");
            // A tree of strings always serialises.
            out.push_str(&serde_yaml::to_string(&doc).unwrap_or_default());
        }
        out
    }
}

/// notBefore / notAfter: from yesterday (clock skew) for a year, like the suite's
/// `time.Now()` + 1 year at day granularity.
struct Validity {
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
}

impl Validity {
    fn one_year() -> Validity {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let today = (now.as_secs() / 86_400) as i64;
        Validity {
            not_before: civil_from_days(today - 1),
            not_after: civil_from_days(today + 365),
        }
    }

    fn apply(&self, params: &mut CertificateParams) {
        let (y, m, d) = self.not_before;
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = self.not_after;
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
}

/// (year, month, day) of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

fn distinguished_name(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

fn leaf_params(sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose, validity: &Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.distinguished_name = distinguished_name("default", "Acme Co");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    params.is_ca = IsCa::ExplicitNoCa;
    validity.apply(&mut params);
    params
}

/// A self-signed serverAuth leaf (`MustCreateSelfSignedCertSecret`).
fn self_signed_server(dns_names: &[&str], validity: &Validity) -> Result<TlsPair> {
    let sans = dns_names
        .iter()
        .map(|n| Ok(SanType::DnsName((*n).try_into()?)))
        .collect::<Result<Vec<_>>>()?;
    let params = leaf_params(sans, ExtendedKeyUsagePurpose::ServerAuth, validity);
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params.self_signed(&key).context("self-signing a certificate")?;
    Ok(TlsPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl Ca {
    fn generate(validity: &Validity) -> Result<Ca> {
        let key = KeyPair::generate().context("generating a CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("gatewayapi", "Kubernetes Gateway API");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity.apply(&mut params);
        let pem = params.self_signed(&key).context("self-signing a CA")?.pem();
        Ok(Ca { params, key, pem })
    }

    fn server(&self, sans: Vec<SanType>, validity: &Validity) -> Result<TlsPair> {
        self.sign(leaf_params(sans, ExtendedKeyUsagePurpose::ServerAuth, validity))
    }

    fn client(&self, validity: &Validity) -> Result<TlsPair> {
        self.sign(leaf_params(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, validity))
    }

    fn sign(&self, mut params: CertificateParams) -> Result<TlsPair> {
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating a key")?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).context("signing a certificate")?;
        Ok(TlsPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Standard base64 with padding (Secret `data`, PEM bodies).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A DER certificate as Go's `pem.Encode` writes it (64-column lines, trailing newline).
pub(crate) fn cert_pem(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use serde::Deserialize as _;

    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
    }

    fn verifier(root_pem: &str) -> Arc<WebPkiServerVerifier> {
        let mut roots = RootCertStore::empty();
        roots.add(der(root_pem)).expect("a trust anchor");
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider()))
            .build()
            .expect("a verifier")
    }

    fn verify(verifier: &WebPkiServerVerifier, cert_pem: &str, name: &str) -> std::result::Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier as _;
        let server_name = ServerName::try_from(name.to_string()).expect("a server name");
        verifier
            .verify_server_cert(&der(cert_pem), &[], &server_name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// Every SNI (and Host) of cases.json's HTTPS cases verifies against the listener
    /// certificate trusted as its own root, as the runner's rustls client will do it.
    #[test]
    fn https_listener_certificate_verifies_for_every_case_sni() {
        let pki = ConformancePki::generate().unwrap();
        let pair = pki.secret(INFRA, "tls-validity-checks-certificate").unwrap();
        let path = super::super::cases::default_path();
        let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut names = BTreeSet::new();
        for test in cases["tests"].as_array().unwrap() {
            for case in test["cases"].as_array().unwrap() {
                let target = &case["target"];
                if target["scheme"] != "https" {
                    continue;
                }
                assert_eq!(
                    target["trust_ca_from_secret"],
                    "gateway-conformance-infra/tls-validity-checks-certificate"
                );
                if let Some(sni) = target["sni"].as_str() {
                    names.insert(sni.to_string());
                }
            }
        }
        assert!(names.len() >= 5, "{names:?}");
        let verifier = verifier(&pair.cert_pem);
        for name in &names {
            verify(&verifier, &pair.cert_pem, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // The wildcard and the explicit names of the manifests' listeners.
        for name in ["fith-example.wildcard.org", "test.example.org", "first-example.org"] {
            verify(&verifier, &pair.cert_pem, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(verify(&verifier, &pair.cert_pem, "example.com").is_err());
    }

    #[test]
    fn backend_and_client_certificates_chain_to_their_cas() {
        let pki = ConformancePki::generate().unwrap();
        let ca3 = pki.config_map_ca(INFRA, "tls-checks-ca-certificate").unwrap();
        let backend = pki.secret(INFRA, "tls-checks-certificate").unwrap();
        let v = verifier(ca3);
        verify(&v, &backend.cert_pem, "abc.example.com").unwrap();
        verify(&v, &backend.cert_pem, "other.example.com").unwrap();
        assert!(verify(&v, &backend.cert_pem, "mismatch.example.com").is_err());
        let mismatch = pki.config_map_ca(INFRA, "mismatch-ca-certificate").unwrap();
        assert!(verify(&verifier(mismatch), &backend.cert_pem, "abc.example.com").is_err());
        let terminate = pki.secret(INFRA, "tls-terminate-checks-certificate").unwrap();
        verify(&v, &terminate.cert_pem, "tls.example.com").unwrap();

        for (ca, client) in [
            (
                "tls-validity-checks-ca-certificate",
                "tls-validity-checks-client-certificate",
            ),
            (
                "tls-validity-checks-per-port-ca-certificate",
                "tls-validity-checks-per-port-client-certificate",
            ),
            ("tls-checks-ca-certificate", "tls-checks-client-certificate"),
        ] {
            let mut roots = RootCertStore::empty();
            roots.add(der(pki.config_map_ca(INFRA, ca).unwrap())).unwrap();
            let v = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .unwrap();
            let cert = der(&pki.secret(INFRA, client).unwrap().cert_pem);
            v.verify_client_cert(&cert, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{client}: {e}"));
        }
    }

    #[test]
    fn manifests_hold_every_object() {
        let pki = ConformancePki::generate().unwrap();
        let yaml = pki.manifests_yaml();
        let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|d| serde_json::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 9 + 5);
        let secret = docs
            .iter()
            .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "tls-checks-certificate")
            .unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls");
        let pair = pki.secret(INFRA, "tls-checks-certificate").unwrap();
        assert_eq!(secret["data"]["tls.crt"], base64_encode(pair.cert_pem.as_bytes()));
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "web-backend-cm")
            .unwrap();
        assert_eq!(cm["metadata"]["namespace"], WEB_BACKEND);
        assert!(
            cm["data"]["ca.crt"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(pki.secret(APP_BACKEND, "tls-passthrough-checks-certificate").is_some());
        // Go's PEM layout equals rcgen's.
        assert_eq!(cert_pem(&der(&pair.cert_pem)), pair.cert_pem);
    }

    #[test]
    fn base64_and_dates() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
