//! The test cluster's PKI, generated in-process: one CA that signs the API server's
//! serving certificate, client certificates for extra users and serving certificates for
//! webhooks; and the ServiceAccount token signing key.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA: trusted by the API server for client certificates, and by clients
/// (and the API server calling webhooks) for serving certificates.
pub(crate) struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    pub(crate) fn generate() -> Result<Ca> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name("kgw-test-ca", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).context("self-signing the CA")?.pem();
        Ok(Ca { params, key, pem })
    }

    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    /// A serving certificate for `sans` (IP addresses or DNS names).
    pub(crate) fn serving(&self, common_name: &str, sans: &[String]) -> Result<CertPair> {
        let mut params =
            CertificateParams::new(sans.to_vec()).with_context(|| format!("subject alternative names {sans:?}"))?;
        params.distinguished_name = name(common_name, None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate: the API server maps CN to the user name and O to a group
    /// (rcgen writes one O at most, hence one group).
    pub(crate) fn client(&self, user: &str, group: Option<&str>) -> Result<CertPair> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(user, group);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A certificate named `common_name` for `sans` (DNS names or IPs), usable as a server
    /// and as a client (our processes are both).
    pub(crate) fn leaf(&self, common_name: &str, sans: &[String]) -> Result<CertPair> {
        let mut params =
            CertificateParams::new(sans.to_vec()).with_context(|| format!("subject alternative names {sans:?}"))?;
        params.distinguished_name = name(common_name, None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<CertPair> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating a key")?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).context("signing a certificate")?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// The ServiceAccount token signing key (ECDSA P-256): (private PKCS#8 PEM, public PEM).
pub(crate) fn service_account_key() -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the service-account key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
