//! Publishing lines into the JetStream stream [`ACCESS_LOG_STREAM`] so that none is lost and
//! none is stored twice, without ever making the writer wait.
//!
//! - Every sink replica receives every entry (Envoy has one access logger per replica) and
//!   publishes it with a `Nats-Msg-Id` that is the same on every replica
//!   ([`crate::line::entry_id_http`]); the stream's duplicate window keeps one copy. So a
//!   replica that dies (even `kill -9`) with entries in flight loses nothing: the others
//!   publish the same entries.
//! - The writer hands each line to a bounded queue (`try_send`, never waits); a tokio task
//!   publishes from it, pipelined: up to [`PublishConfig::in_flight`] publishes wait for
//!   their JetStream ack at once. A publish that fails or is not acked in time (NATS down,
//!   a broker restart, the stream missing) is published again with the same id after a
//!   backoff, until it is acked: a retry of a publish that was in fact stored is acked as
//!   a duplicate, so retrying is safe. Nothing is dropped while the process runs, except
//!   when the queue is full (a long NATS outage; counted as `queue_full`).
//! - The stream is created by the sink when it starts, or after the broker lost it (a
//!   publish answered "no responders"): `STREAM.CREATE` with [`StreamSettings`], which is
//!   idempotent; when a stream of that name exists with other limits (an operator's), its
//!   config is read (`STREAM.INFO`) and kept. The sink never updates, purges or deletes it.
//! - [`Drainer::drain`] (graceful stop): no new lines; the queue, the retries and the
//!   pending acks are worked off within the given time; what is left then is counted as
//!   dropped (`stopped`).
use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    context::{PublishError, PublishErrorKind},
    message::PublishMessage,
    publish::PublishAck,
    stream,
};
use bytes::Bytes;
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use kgw_common::bus::Bus;
use kgw_proto::nats::{ACCESS_LOG_STREAM, ACCESS_LOG_SUBJECT_PREFIX};
use tokio::sync::{mpsc, oneshot};

use crate::stats::{self, DropReason, Stats};

/// Lines waiting to be published (the default of `--publish-queue`).
pub const QUEUE: usize = 65_536;
/// Publishes awaiting their ack at once.
pub const IN_FLIGHT: usize = 1024;
/// Longest wait for one publish to be taken by the client and acked by JetStream.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Limits of the stream the sink creates (an existing stream keeps its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Entries older than this are removed.
    pub max_age: Duration,
    /// Oldest entries are removed above this size (bytes).
    pub max_bytes: i64,
    /// How long a `Nats-Msg-Id` is remembered: the replicas' publishes of one entry (and
    /// retries) must arrive within it.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl StreamSettings {
    /// The stream's config: file storage, over `kgw.accesslog.>`, oldest entries go first.
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: ACCESS_LOG_STREAM.to_string(),
            subjects: vec![format!("{ACCESS_LOG_SUBJECT_PREFIX}.>")],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }
}

/// How the publishing task works.
#[derive(Clone, Debug)]
pub struct PublishConfig {
    /// Lines waiting to be published; more are dropped (`queue_full`).
    pub queue: usize,
    /// Publishes awaiting their ack at once.
    pub in_flight: usize,
    /// Longest wait for one publish's ack before it is retried.
    pub timeout: Duration,
    pub stream: StreamSettings,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            queue: QUEUE,
            in_flight: IN_FLIGHT,
            timeout: PUBLISH_TIMEOUT,
            stream: StreamSettings::default(),
        }
    }
}

/// One line to publish.
#[derive(Debug)]
struct Item {
    subject: String,
    id: String,
    payload: Bytes,
}

/// The writer's handle on the publishing task.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: mpsc::Sender<Item>,
    stats: Arc<Stats>,
}

/// Ends the publishing task gracefully (see [`Drainer::drain`]).
#[derive(Debug)]
pub struct Drainer {
    drain: oneshot::Sender<Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Spawns the publishing task on the tokio pool.
    pub fn spawn(bus: Bus, config: PublishConfig, stats: Arc<Stats>) -> (Self, Drainer) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let (drain, drain_rx) = oneshot::channel();
        let js = jetstream::ContextBuilder::new()
            .timeout(config.timeout)
            // Our own bound (`in_flight`) is the one that applies.
            .max_ack_inflight(config.in_flight.max(1) + 1)
            .backpressure_on_inflight(true)
            .build(bus.client.clone());
        let task = tokio::spawn(
            Task {
                js,
                bus,
                config,
                stats: stats.clone(),
                rx,
                pending: FuturesUnordered::new(),
                retry: VecDeque::new(),
            }
            .run(drain_rx),
        );
        (Self { tx, stats }, Drainer { drain, task })
    }

    /// Queues one line, `id` its `Nats-Msg-Id`; never waits.
    pub fn publish(&self, subject: String, id: String, payload: Bytes) {
        if self.tx.try_send(Item { subject, id, payload }).is_err() {
            dropped(&self.stats, DropReason::QueueFull, 1);
        }
    }
}

impl Drainer {
    /// Stops taking lines and publishes what is queued, retried or awaiting its ack, for at
    /// most `within`; what is left then is counted as dropped. Returns when done.
    pub async fn drain(self, within: Duration) {
        let _ = self.drain.send(Instant::now() + within);
        // The task keeps its own deadline; this bound is only against a stuck task.
        if tokio::time::timeout(within + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            tracing::error!("the publishing task did not end after its drain deadline");
        }
    }
}

type Pending = BoxFuture<'static, (Item, Result<PublishAck, PublishError>)>;

struct Task {
    js: jetstream::Context,
    bus: Bus,
    config: PublishConfig,
    stats: Arc<Stats>,
    rx: mpsc::Receiver<Item>,
    pending: FuturesUnordered<Pending>,
    retry: VecDeque<Item>,
}

impl Task {
    async fn run(mut self, mut drain: oneshot::Receiver<Instant>) {
        let mut drain_seen = false;
        let mut deadline: Option<Instant> = None;
        // The queue is closed and empty: only retries and pending acks are left.
        let mut closed = false;
        let mut stream_ready = false;
        let mut ensuring: Option<BoxFuture<'static, Result<(), String>>> = None;
        let mut ensure_at = Instant::now();
        let mut ensure_backoff = BACKOFF_MIN;
        let mut retry_at = Instant::now();
        let mut backoff = BACKOFF_MIN;
        loop {
            // Draining: the queue takes nothing more, so empty means done with it.
            if deadline.is_some() && self.rx.is_empty() {
                closed = true;
            }
            if closed && self.pending.is_empty() && self.retry.is_empty() {
                break;
            }
            if !stream_ready && ensuring.is_none() && Instant::now() >= ensure_at {
                ensuring = Some(ensure_stream(self.js.clone(), self.bus.clone(), self.config.stream.config()).boxed());
            }
            let room = stream_ready && self.pending.len() < self.config.in_flight;
            // Retries first, once their backoff has passed.
            if room && !self.retry.is_empty() && Instant::now() >= retry_at {
                let item = self.retry.pop_front().expect("not empty");
                self.start(item);
                continue;
            }
            let mut wake = deadline;
            if room && !self.retry.is_empty() {
                wake = Some(wake.map_or(retry_at, |w| w.min(retry_at)));
            }
            if !stream_ready && ensuring.is_none() {
                wake = Some(wake.map_or(ensure_at, |w| w.min(ensure_at)));
            }
            tokio::select! {
                biased;
                at = &mut drain, if !drain_seen => {
                    drain_seen = true;
                    if let Ok(at) = at {
                        deadline = Some(at);
                        self.rx.close();
                    }
                }
                Some((item, result)) = self.pending.next(), if !self.pending.is_empty() => {
                    match result {
                        Ok(ack) => {
                            stats::add(&self.stats.publishes_sent, 1);
                            if ack.duplicate {
                                stats::add(&self.stats.publishes_duplicate, 1);
                            }
                            backoff = BACKOFF_MIN;
                        }
                        Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                            tracing::error!(%error, id = item.id, bytes = item.payload.len(), "access-log line larger than NATS takes");
                            dropped(&self.stats, DropReason::PublishFailed, 1);
                        }
                        Err(error) => {
                            if error.kind() == PublishErrorKind::StreamNotFound && stream_ready {
                                tracing::warn!(stream = ACCESS_LOG_STREAM, "the access-log stream is gone; creating it again");
                                stream_ready = false;
                            }
                            let total = stats::add(&self.stats.publish_retries, 1);
                            if total.is_power_of_two() {
                                tracing::warn!(%error, retries_total = total, "access-log publish not acked; retrying");
                            }
                            // One backoff for the whole batch that failed together.
                            if self.retry.is_empty() {
                                retry_at = Instant::now() + backoff;
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                            }
                            self.retry.push_back(item);
                        }
                    }
                }
                result = async { ensuring.as_mut().expect("guarded").await }, if ensuring.is_some() => {
                    ensuring = None;
                    match result {
                        Ok(()) => {
                            stream_ready = true;
                            ensure_backoff = BACKOFF_MIN;
                        }
                        Err(error) => {
                            // Not connected yet is the normal start: no warning for it.
                            if self.bus.is_connected() {
                                tracing::warn!(stream = ACCESS_LOG_STREAM, error, "cannot create the access-log stream yet; retrying");
                            } else {
                                tracing::debug!(stream = ACCESS_LOG_STREAM, error, "waiting for NATS to create the access-log stream");
                            }
                            // Not connected: try again soon, so the stream is made as soon
                            // as the client connects; a broker that refuses backs off.
                            if self.bus.is_connected() {
                                ensure_at = Instant::now() + ensure_backoff;
                                ensure_backoff = (ensure_backoff * 2).min(BACKOFF_MAX);
                            } else {
                                ensure_at = Instant::now() + BACKOFF_MIN;
                            }
                        }
                    }
                }
                item = self.rx.recv(), if room && self.retry.is_empty() && !closed => match item {
                    Some(item) => self.start(item),
                    None => closed = true,
                },
                () = sleep_until(wake), if wake.is_some() => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let mut left = (self.pending.len() + self.retry.len()) as u64;
                while self.rx.try_recv().is_ok() {
                    left += 1;
                }
                if left > 0 {
                    dropped(&self.stats, DropReason::Stopped, left);
                }
                break;
            }
        }
        tracing::info!(stats = ?self.stats.snapshot(), "access-log publishing stopped");
    }

    fn start(&mut self, item: Item) {
        let js = self.js.clone();
        self.pending.push(
            async move {
                let message = PublishMessage::build()
                    .payload(item.payload.clone())
                    .message_id(&item.id);
                let result = match js.send_publish(item.subject.clone(), message).await {
                    Ok(ack) => ack.await,
                    Err(error) => Err(error),
                };
                (item, result)
            }
            .boxed(),
        );
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Creates the stream (idempotent for the same config), or finds it existing with its own
/// limits; it must capture the access-log subjects and deduplicate.
async fn ensure_stream(js: jetstream::Context, bus: Bus, config: stream::Config) -> Result<(), String> {
    if !bus.is_connected() {
        return Err("NATS not connected".into());
    }
    let created = match js.create_stream(config.clone()).await {
        Ok(_) => {
            tracing::info!(stream = ACCESS_LOG_STREAM, "access-log stream ready");
            return Ok(());
        }
        Err(error) => error,
    };
    let stream = js
        .get_stream(ACCESS_LOG_STREAM)
        .await
        .map_err(|error| format!("create: {created}; info: {error}"))?;
    let have = &stream.cached_info().config;
    if !have.subjects.iter().any(|s| config.subjects.contains(s)) {
        return Err(format!(
            "stream {ACCESS_LOG_STREAM} exists but captures {:?}, not {:?}",
            have.subjects, config.subjects
        ));
    }
    if have.duplicate_window.is_zero() {
        return Err(format!("stream {ACCESS_LOG_STREAM} exists without a duplicate window"));
    }
    tracing::info!(
        stream = ACCESS_LOG_STREAM,
        max_age = ?have.max_age,
        max_bytes = have.max_bytes,
        duplicate_window = ?have.duplicate_window,
        "access-log stream exists with its own limits; keeping them"
    );
    Ok(())
}

/// Counts drops; logs the 1st, 2nd, 4th, 8th, ... so a long outage does not flood the log.
fn dropped(stats: &Stats, reason: DropReason, n: u64) {
    let before = stats.dropped_total();
    let total = stats.dropped_n(reason, n);
    if (before + 1..=total).any(u64::is_power_of_two) {
        tracing::warn!(
            reason = reason.message(),
            dropped_total = total,
            "access-log line not published on NATS"
        );
    }
}
