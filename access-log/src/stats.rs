//! Counters shared by the gRPC edge, the writer and the publisher.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    /// Access-log streams opened by Envoys.
    pub streams: AtomicU64,
    /// Log entries (HTTP or TCP) received over gRPC.
    pub entries_received: AtomicU64,
    /// JSON lines written to the output.
    pub lines_written: AtomicU64,
    /// Lines that could not be serialised or written.
    pub write_errors: AtomicU64,
    /// Lines acknowledged by JetStream (stored, or a duplicate of an entry it holds).
    pub publishes_sent: AtomicU64,
    /// Of those, the acks that said `duplicate: true`: another replica (or an earlier
    /// attempt of this one) had already stored the entry.
    pub publishes_duplicate: AtomicU64,
    /// Publishes sent again after a failure or a missing ack.
    pub publish_retries: AtomicU64,
    /// Lines not published: queue full, too large, or left when a drain ran out of time.
    pub publishes_dropped: AtomicU64,
    /// `publishes_dropped` per [`DropReason`] (indexed by `reason as usize`).
    pub publishes_dropped_by: [AtomicU64; DropReason::ALL.len()],
    /// Streams ended by a message refused, per [`RejectReason`] (indexed by `reason as usize`).
    pub messages_rejected_by: [AtomicU64; RejectReason::ALL.len()],
}

/// Why a message from Envoy was refused (the stream then ends with an error status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Larger than the gRPC message limit.
    Oversized,
    /// Not a valid `StreamAccessLogsMessage`.
    Malformed,
}

impl RejectReason {
    pub const ALL: [RejectReason; 2] = [RejectReason::Oversized, RejectReason::Malformed];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Oversized => "oversized",
            RejectReason::Malformed => "malformed",
        }
    }
}

/// Why a line was not published on NATS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    QueueFull,
    /// Not used since publishes are retried until acked (kept: the label stays exported).
    NotConnected,
    /// Refused for good (larger than the broker's max payload).
    PublishFailed,
    /// Not used since publishes are retried until acked (kept: the label stays exported).
    TimedOut,
    /// Still unpublished when a graceful stop's drain ran out of time.
    Stopped,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::NotConnected,
        DropReason::PublishFailed,
        DropReason::TimedOut,
        DropReason::Stopped,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::NotConnected => "nats_not_connected",
            DropReason::PublishFailed => "publish_failed",
            DropReason::TimedOut => "publish_timed_out",
            DropReason::Stopped => "stopped",
        }
    }

    /// For logs.
    pub fn message(self) -> &'static str {
        match self {
            DropReason::QueueFull => "publish queue full",
            DropReason::NotConnected => "NATS not connected",
            DropReason::PublishFailed => "NATS publish failed",
            DropReason::TimedOut => "NATS publish timed out",
            DropReason::Stopped => "stopped before JetStream acked it",
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub streams: u64,
    pub entries_received: u64,
    pub lines_written: u64,
    pub write_errors: u64,
    pub publishes_sent: u64,
    pub publishes_duplicate: u64,
    pub publish_retries: u64,
    pub publishes_dropped: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            streams: self.streams.load(Relaxed),
            entries_received: self.entries_received.load(Relaxed),
            lines_written: self.lines_written.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            publishes_sent: self.publishes_sent.load(Relaxed),
            publishes_duplicate: self.publishes_duplicate.load(Relaxed),
            publish_retries: self.publish_retries.load(Relaxed),
            publishes_dropped: self.publishes_dropped.load(Relaxed),
        }
    }
}

impl Stats {
    /// Counts `n` lines not published; returns the new total of drops.
    pub(crate) fn dropped_n(&self, reason: DropReason, n: u64) -> u64 {
        add(&self.publishes_dropped_by[reason as usize], n);
        add(&self.publishes_dropped, n)
    }

    /// Drops so far, all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.publishes_dropped.load(Relaxed)
    }

    /// Counts one refused message.
    pub(crate) fn rejected(&self, reason: RejectReason) -> u64 {
        add(&self.messages_rejected_by[reason as usize], 1)
    }

    /// Refused messages so far for `reason`.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.messages_rejected_by[reason as usize].load(Relaxed)
    }

    /// Drops so far for `reason`.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        self.publishes_dropped_by[reason as usize].load(Relaxed)
    }
}

/// Adds `n`; returns the new value.
pub(crate) fn add(counter: &AtomicU64, n: u64) -> u64 {
    counter.fetch_add(n, Relaxed).wrapping_add(n)
}
