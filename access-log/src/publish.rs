//! Publishing lines on NATS without ever making the writer wait: the writer hands each line
//! to a bounded queue (`try_send`); a tokio task drains it into the NATS client. A line is
//! dropped (and counted) when the queue is full, NATS is not connected, or the client does
//! not take it within [`PUBLISH_TIMEOUT`]. Plain core NATS publish (no JetStream): access
//! logs are lossy by design, as in Envoy's ALS.
use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use kgw_common::bus::Bus;
use tokio::sync::mpsc;

use crate::stats::{self, DropReason, Stats};

/// Lines waiting for the NATS client.
pub const QUEUE: usize = 8192;
/// Longest wait for the client to accept one message.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// The writer's handle on the publishing task.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: mpsc::Sender<(String, Bytes)>,
    stats: Arc<Stats>,
}

impl Publisher {
    /// Spawns the publishing task on the tokio pool. It ends when every `Publisher` is gone.
    pub fn spawn(bus: Bus, queue: usize, stats: Arc<Stats>) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(run(bus, rx, stats.clone()));
        Self { tx, stats }
    }

    /// Queues one message; never waits.
    pub fn publish(&self, subject: String, payload: Bytes) {
        if self.tx.try_send((subject, payload)).is_err() {
            dropped(&self.stats, DropReason::QueueFull);
        }
    }
}

async fn run(bus: Bus, mut rx: mpsc::Receiver<(String, Bytes)>, stats: Arc<Stats>) {
    while let Some((subject, payload)) = rx.recv().await {
        if !bus.is_connected() {
            dropped(&stats, DropReason::NotConnected);
            continue;
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, bus.client.publish(subject, payload)).await {
            Ok(Ok(())) => {
                stats::add(&stats.publishes_sent, 1);
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "NATS publish failed");
                dropped(&stats, DropReason::PublishFailed);
            }
            Err(_) => dropped(&stats, DropReason::TimedOut),
        }
    }
}

/// Counts a drop; logs the 1st, 2nd, 4th, 8th, ... so a long outage does not flood the log.
fn dropped(stats: &Stats, reason: DropReason) {
    let total = stats.dropped(reason);
    if total.is_power_of_two() {
        tracing::warn!(
            reason = reason.message(),
            dropped_total = total,
            "access-log line not published on NATS"
        );
    }
}
