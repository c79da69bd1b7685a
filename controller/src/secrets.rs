//! TLS Secrets of HTTPS listeners. The controller reads them itself from the config source
//! (Secrets never travel over NATS: a Proxy names them, `SslConfig.secret_ref`), checks
//! that each holds a certificate chain and the key that matches it, and serves them to
//! Envoy as SDS resources `<namespace>/<name>` on the ADS stream, so that no listener
//! carries a key. A Secret that is missing or unusable leaves its filter chain out: Envoy
//! would otherwise keep the whole listener warming (or serve the chain without TLS).
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use envoy_types::pb::envoy::{
    config::core::v3::{DataSource, data_source},
    extensions::transport_sockets::tls::v3::{Secret, TlsCertificate, secret},
};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kgw_common::resources::{Change, Kind, Resource};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// The kinds the controller reads from the config source.
pub const KINDS: &[Kind] = &[Kind::Secret];

/// Why a Secret cannot terminate TLS.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {0} not found")]
    NotFound(String),
    #[error("no {0}")]
    Missing(&'static str),
    #[error("tls.crt: {0}")]
    Certificate(String),
    #[error("tls.key: {0}")]
    Key(String),
    #[error("tls.key is not the key of the certificate in tls.crt")]
    Mismatch,
}

/// A certificate chain and its private key, both PEM, checked to belong together.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSecret {
    chain: Vec<u8>,
    key: Vec<u8>,
}

/// Never prints the key (settings, and so secrets, appear in debug logs).
impl std::fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSecret")
            .field("chain_bytes", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TlsSecret {
    /// `chain` (PEM certificates, leaf first) and `key` (a PEM private key), if the key is
    /// usable and is the leaf's.
    pub fn from_pem(chain: Vec<u8>, key: Vec<u8>) -> Result<Self, SecretError> {
        let certs = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SecretError::Certificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(SecretError::Certificate("no PEM certificate".into()));
        }
        let private = PrivateKeyDer::from_pem_slice(&key).map_err(|e| SecretError::Key(e.to_string()))?;
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| SecretError::Key(e.to_string()))?;
        rustls::sign::CertifiedKey::new(certs, signing)
            .keys_match()
            .map_err(|_| SecretError::Mismatch)?;
        Ok(Self { chain, key })
    }

    /// A Secret's `tls.crt` and `tls.key` (from `data`, else `stringData`).
    pub fn from_kube(secret: &KubeSecret) -> Result<Self, SecretError> {
        let field = |name: &'static str| -> Result<Vec<u8>, SecretError> {
            let data = secret.data.as_ref().and_then(|d| d.get(name)).map(|b| b.0.clone());
            let string_data = || {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .map(|s| s.clone().into_bytes())
            };
            data.or_else(string_data).ok_or(SecretError::Missing(name))
        };
        Self::from_pem(field("tls.crt")?, field("tls.key")?)
    }

    /// The SDS resource `name`: the chain and key inline (SDS is how they reach Envoy).
    pub fn to_envoy(&self, name: &str) -> Secret {
        let inline = |bytes: &[u8]| DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
            ..Default::default()
        };
        Secret {
            name: name.to_string(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&self.chain)),
                private_key: Some(inline(&self.key)),
                ..Default::default()
            })),
        }
    }
}

/// The SDS name of Secret `namespace/name`.
pub fn sds_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Every Secret read, by SDS name: usable, or why not. Shared (cloning settings is cheap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSecrets(Arc<BTreeMap<String, Result<TlsSecret, SecretError>>>);

impl TlsSecrets {
    /// Secret `name` (`<namespace>/<name>`), or why it cannot be served.
    pub fn get(&self, name: &str) -> Result<&TlsSecret, SecretError> {
        match self.0.get(name) {
            Some(Ok(secret)) => Ok(secret),
            Some(Err(why)) => Err(why.clone()),
            None => Err(SecretError::NotFound(name.to_string())),
        }
    }

    /// Applies a source's changes (other kinds ignored); returns the SDS names that changed.
    pub fn apply(&mut self, changes: &[Change]) -> BTreeSet<String> {
        let mut changed = BTreeSet::new();
        let map = Arc::make_mut(&mut self.0);
        for change in changes {
            let key = change.key();
            if key.kind != Kind::Secret {
                continue;
            }
            let name = sds_name(&key.namespace, &key.name);
            let before = map.get(&name).cloned();
            match change {
                Change::Upsert(_, Resource::Secret(secret)) => {
                    let read = TlsSecret::from_kube(secret);
                    if let Err(why) = &read {
                        tracing::debug!(secret = %name, %why, "Secret cannot serve TLS");
                    }
                    map.insert(name.clone(), read);
                }
                Change::Upsert(..) => continue,
                Change::Delete(_) => {
                    map.remove(&name);
                }
            }
            if map.get(&name) != before.as_ref() {
                changed.insert(name);
            }
        }
        changed
    }

    /// With Secret `name` set: for tests and tools that have no config source.
    pub fn with(mut self, name: &str, secret: Result<TlsSecret, SecretError>) -> Self {
        Arc::make_mut(&mut self.0).insert(name.to_string(), secret);
        self
    }
}
