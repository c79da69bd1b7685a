//! NATS: connecting with retries, opening key-value buckets, and the two ways processes use
//! them: [`spawn_kv_writer`] (write only what changed, reconcile after every reconnect) and
//! [`spawn_kv_mirror`] (a full read on start and on every reconnect, then a watch).
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;

use crate::{chunk, shutdown::Shutdown};

mod mirror;
mod writer;

pub use mirror::{KvEvent, coalesce, spawn_kv_mirror};
pub use writer::{KvState, Owns, Scope, WriterStats, same_bytes, spawn_kv_writer, writes_between};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid NATS URL {url:?}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot open key-value bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
    #[error("shutting down")]
    Shutdown,
    #[error("cannot read the NATS password file {path}")]
    PasswordFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who a process is to the broker: a user and its password (from a file, as a mounted
/// Secret gives it), or nobody (a broker without authorization); and, with mTLS, TLS with
/// this process's certificate.
#[derive(Clone, Debug, Default)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
    pub tls: Option<crate::tls::Mtls>,
}

/// A NATS connection plus its JetStream context. `epoch` counts connections: it changes
/// every time the client (re)connects, so state owners know to resynchronise.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    epoch: watch::Receiver<u64>,
}

/// Connects in the background: returns at once, and the client keeps retrying (with
/// backoff) until nats-server answers, forever.
pub async fn connect(url: &str, name: &str, auth: &NatsAuth) -> Result<Bus, BusError> {
    let (epoch_tx, epoch) = watch::channel(0u64);
    let epoch_tx = Arc::new(epoch_tx);
    let process = name.to_string();
    let mut options = async_nats::ConnectOptions::new();
    let (url, from_url) = split_credentials(url);
    if auth.user.is_none()
        && let Some((user, password)) = from_url
    {
        options = options.user_and_password(user, password);
    }
    if let Some(user) = &auth.user {
        let password = match &auth.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| BusError::PasswordFile {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string(),
            None => String::new(),
        };
        options = options
            .user_and_password(user.clone(), password)
            .custom_inbox_prefix(kgw_proto::nats::users::inbox_prefix(user));
    }
    if let Some(mtls) = &auth.tls {
        options = options
            .require_tls(true)
            .tls_client_config(rustls::ClientConfig::clone(&mtls.client_config()));
    }
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            // 50 ms, 100 ms, ... capped at 2 s: fast return after a broker restart.
            Duration::from_millis((50u64 << attempts.min(6)).min(2000))
        })
        .event_callback(move |event| {
            let epoch_tx = epoch_tx.clone();
            let process = process.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(process, "connected to NATS");
                        epoch_tx.send_modify(|e| *e += 1);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(process, "disconnected from NATS; retrying")
                    }
                    other => tracing::debug!(process, event = %other, "NATS event"),
                }
            }
        })
        .connect(url.as_str())
        .await
        .map_err(|source| BusError::Connect {
            url: url.clone(),
            source,
        })?;
    let jetstream = jetstream::new(client.clone());
    Ok(Bus {
        client,
        jetstream,
        epoch,
    })
}

/// `nats://user:password@host:port` → (`nats://host:port`, the credentials): the client
/// does not take them from the URL itself.
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (
        format!("{scheme}://{host}"),
        Some((user.to_string(), password.to_string())),
    )
}

impl Bus {
    /// A receiver whose value changes on every (re)connection.
    pub fn epoch(&self) -> watch::Receiver<u64> {
        self.epoch.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until connected (or shutdown).
    pub async fn wait_connected(&self, shutdown: &Shutdown) -> Result<(), BusError> {
        let mut epoch = self.epoch.clone();
        loop {
            if self.is_connected() {
                return Ok(());
            }
            tokio::select! {
                _ = shutdown.wait() => return Err(BusError::Shutdown),
                _ = epoch.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Opens the bucket, creating it (history 1, file storage) when missing. Retries with
    /// backoff until it works or shutdown.
    pub async fn kv(&self, bucket: &str, shutdown: &Shutdown) -> Result<kv::Store, BusError> {
        let config = kv::Config {
            bucket: bucket.to_string(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        self.kv_with(config, shutdown).await
    }

    /// Opens the bucket `config` names, creating it with `config` when missing. Retries with
    /// backoff until it works or shutdown.
    pub async fn kv_with(&self, config: kv::Config, shutdown: &Shutdown) -> Result<kv::Store, BusError> {
        let bucket = config.bucket.as_str();
        let mut delay = Duration::from_millis(50);
        loop {
            self.wait_connected(shutdown).await?;
            match self.try_kv(&config).await {
                Ok(store) => return Ok(store),
                Err(error) => {
                    tracing::warn!(bucket, %error, "cannot open bucket yet; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return Err(BusError::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Opens `bucket` once its writer has created it (retrying until then, with backoff).
    /// For readers: a create they may not do would wait for a reply that never comes.
    pub async fn existing_kv(&self, bucket: &str, shutdown: &Shutdown) -> Result<kv::Store, BusError> {
        let mut delay = Duration::from_millis(20);
        let mut attempts = 0u32;
        loop {
            self.wait_connected(shutdown).await?;
            match self.jetstream.get_key_value(bucket).await {
                Ok(store) => return Ok(store),
                Err(error) => {
                    attempts += 1;
                    // Its writer starts alongside: say so only if it takes a while.
                    if attempts == 20 {
                        tracing::warn!(bucket, %error, "bucket not created yet by its writer; waiting");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return Err(BusError::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    async fn try_kv(&self, config: &kv::Config) -> Result<kv::Store, BusError> {
        let bucket = config.bucket.as_str();
        if let Ok(store) = self.jetstream.get_key_value(bucket).await {
            return Ok(store);
        }
        let created = self.jetstream.create_key_value(config.clone()).await;
        match created {
            Ok(store) => Ok(store),
            // Another process may have created it meanwhile.
            Err(create) => self
                .jetstream
                .get_key_value(bucket)
                .await
                .map_err(|_| BusError::Bucket {
                    bucket: bucket.to_string(),
                    message: create.to_string(),
                }),
        }
    }
}
/// The value of a head key: itself, or its parts reassembled and checked.
pub(crate) async fn resolve(store: &kv::Store, key: &str, value: Bytes) -> Result<Bytes, String> {
    chunk::resolve(key, value, |part_key| async move {
        store.get(&part_key).await.map_err(|e| e.to_string())
    })
    .await
}

/// Every live key and value of the bucket (split values reassembled).
pub async fn read_all(store: &kv::Store) -> Result<BTreeMap<String, Bytes>, String> {
    let mut keys = store.keys().await.map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        names.push(key.map_err(|e| e.to_string())?);
    }
    let mut all = BTreeMap::new();
    for key in names {
        if chunk::is_part_key(&key) {
            continue;
        }
        if let Some(value) = store.get(&key).await.map_err(|e| e.to_string())? {
            let value = resolve(store, &key, value).await?;
            all.insert(key, value);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_the_url() {
        assert_eq!(
            split_credentials("nats://admin:s3cret@127.0.0.1:4222"),
            (
                "nats://127.0.0.1:4222".to_string(),
                Some(("admin".to_string(), "s3cret".to_string()))
            )
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".to_string(), None)
        );
    }
}
