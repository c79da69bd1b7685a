//! Discovery's health without a port: a `Heartbeat` on NATS and a file for an exec probe.
//! The file is rewritten (its content: the time in unix ms) on every beat while discovery is
//! connected to NATS and has read its first config state, so a probe checks its age; it is
//! removed on shutdown.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use kgw_common::{
    bus::{Bus, KvState},
    shutdown::Shutdown,
};
use kgw_proto::{nats::DISCOVERY_HEARTBEAT_SUBJECT, v1::Heartbeat};
use prost::Message as _;
use tokio::sync::watch;

/// The process name in heartbeats.
pub(crate) const PROCESS: &str = "discovery";

pub(crate) struct HealthConfig {
    pub file: PathBuf,
    pub every: Duration,
    /// `hostname-pid`, see [`instance_name`].
    pub instance: String,
}

/// `<hostname>-<pid>`: tells replicas apart.
pub(crate) fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}-{}", std::process::id())
}

/// How soon a process that is not healthy yet looks again (connection, first state).
const RECHECK: Duration = Duration::from_millis(200);

/// Beats every `config.every` until shutdown, then removes the health file. While not
/// healthy it looks again every [`RECHECK`], so the file appears as soon as it may.
pub(crate) async fn run(
    bus: Bus,
    config: HealthConfig,
    desired: watch::Receiver<KvState>,
    initialized: watch::Receiver<bool>,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(config.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = false;
    let mut file_ok = true;
    loop {
        let ticked = tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => true,
            _ = tokio::time::sleep(RECHECK), if !healthy => false,
        };
        let connected = bus.is_connected();
        let now_healthy = connected && *initialized.borrow();
        if connected && (ticked || now_healthy) {
            let beat = Heartbeat {
                process: PROCESS.into(),
                instance: config.instance.clone(),
                unix_ms: unix_ms(),
                upstreams: desired.borrow().len() as u64,
            };
            if let Err(error) = bus
                .client
                .publish(DISCOVERY_HEARTBEAT_SUBJECT, beat.encode_to_vec().into())
                .await
            {
                tracing::warn!(%error, "cannot publish heartbeat");
            }
        }
        if now_healthy {
            file_ok = touch(&config.file, unix_ms(), file_ok).await;
        } else if healthy {
            tracing::warn!("unhealthy: no NATS connection; health file no longer rewritten");
        }
        healthy = now_healthy;
    }
    remove(&config.file).await;
}

async fn touch(file: &Path, now: u64, was_ok: bool) -> bool {
    match tokio::fs::write(file, format!("{now}\n")).await {
        Ok(()) => {
            if !was_ok {
                tracing::info!(file = %file.display(), "health file written again");
            }
            true
        }
        Err(error) => {
            if was_ok {
                tracing::warn!(file = %file.display(), %error, "cannot write health file");
            }
            false
        }
    }
}

async fn remove(file: &Path) {
    match tokio::fs::remove_file(file).await {
        Ok(()) => tracing::debug!(file = %file.display(), "health file removed"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(file = %file.display(), %error, "cannot remove health file"),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
