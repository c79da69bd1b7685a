//! The `Discovery` actor: owns the resource index, applies the source's batches, translates
//! and publishes the desired content of `kgw_upstreams` (key → encoded Upstream).
use std::{collections::BTreeMap, sync::Arc};

use actix::{Actor, AsyncContext as _, Context, Handler, Message};
use bytes::Bytes;
use kgw_common::{
    bus::KvState,
    resources::{Change, Index, Kind},
    source::Batch,
};
use prost::Message as _;
use tokio::sync::watch;

use kgw_common::upstreams;

use crate::{
    fds::schedule::FdsMode,
    probing::{self, ProbeInput},
};

/// Applies one batch of config changes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyBatch(pub Batch);

/// What the actor publishes.
#[derive(Clone)]
pub struct Outputs {
    /// Desired bucket content for the keys discovery owns.
    pub desired: watch::Receiver<KvState>,
    /// True once the source's first (whole) state has been applied: before that, `desired`
    /// is not the truth and must not be written (it would delete every upstream).
    pub initialized: watch::Receiver<bool>,
    /// Per Upstream key, whether and how function discovery may probe it.
    pub(crate) probe_inputs: watch::Receiver<Arc<BTreeMap<String, ProbeInput>>>,
}

pub struct Discovery {
    index: Index,
    fds_mode: FdsMode,
    desired: watch::Sender<KvState>,
    initialized: watch::Sender<bool>,
    probe_inputs: watch::Sender<Arc<BTreeMap<String, ProbeInput>>>,
}

impl Discovery {
    pub fn new(fds_mode: FdsMode) -> (Self, Outputs) {
        let (desired, desired_rx) = watch::channel(KvState::default());
        let (initialized, initialized_rx) = watch::channel(false);
        let (probe_inputs, probe_inputs_rx) = watch::channel(Arc::default());
        let actor = Self {
            index: Index::default(),
            fds_mode,
            desired,
            initialized,
            probe_inputs,
        };
        (
            actor,
            Outputs {
                desired: desired_rx,
                initialized: initialized_rx,
                probe_inputs: probe_inputs_rx,
            },
        )
    }

    fn publish(&mut self) {
        let all = upstreams::upstreams(&self.index);
        let inputs = probing::probe_inputs(&self.index, &all, self.fds_mode);
        self.probe_inputs.send_if_modified(|current| {
            if **current == inputs {
                return false;
            }
            *current = Arc::new(inputs);
            true
        });
        let state: BTreeMap<String, Bytes> = all
            .into_iter()
            .map(|(key, upstream)| (key, Bytes::from(upstream.encode_to_vec())))
            .collect();
        let count = state.len();
        let changed = self.desired.send_if_modified(|current| {
            if *current.values == state {
                return false;
            }
            *current = KvState::traced(state);
            true
        });
        tracing::debug!(upstreams = count, changed, "translated");
    }
}

impl Actor for Discovery {
    type Context = Context<Self>;
}

impl Discovery {
    /// Starts the actor on the config source's batches: those that queued up while it
    /// translated are applied together and translated once.
    pub fn start_on(self, batches: tokio::sync::mpsc::Receiver<Batch>) -> actix::Addr<Self> {
        use futures::StreamExt as _;
        Self::create(move |ctx| {
            ctx.add_stream(
                tokio_stream::wrappers::ReceiverStream::new(batches)
                    .ready_chunks(64)
                    .map(SourceBatches),
            );
            self
        })
    }
}

/// Batches from the config source, in arrival order.
pub struct SourceBatches(Vec<Batch>);

impl actix::StreamHandler<SourceBatches> for Discovery {
    fn handle(&mut self, SourceBatches(batches): SourceBatches, ctx: &mut Context<Self>) {
        if let Some(merged) = Batch::merge(batches) {
            Handler::handle(self, ApplyBatch(merged), ctx);
        }
    }

    /// The source ends only at shutdown; the actor stops with the system.
    fn finished(&mut self, _ctx: &mut Context<Self>) {}
}

impl Handler<ApplyBatch> for Discovery {
    type Result = ();

    fn handle(&mut self, ApplyBatch(batch): ApplyBatch, _: &mut Context<Self>) {
        let mut relevant = 0;
        for change in &batch.changes {
            let kind = match change {
                Change::Upsert(key, _) | Change::Delete(key) => key.kind,
            };
            // Namespaces: their labels turn function discovery on or off (fdsMode).
            if matches!(
                kind,
                Kind::Service | Kind::EndpointSlice | Kind::Upstream | Kind::Namespace
            ) {
                self.index.apply(change);
                relevant += 1;
            } else if kind == Kind::Secret
                && let Some(change) = probing::secret_change(&self.index, change)
            {
                // The credentials of Lambda Upstreams: only Gloo's AWS keys are kept.
                self.index.apply(&change);
                relevant += 1;
            }
        }
        let first = !*self.initialized.borrow();
        if relevant > 0 || first {
            let span = tracing::info_span!(parent: &batch.span, "discovery.translate", changes = relevant);
            let _in_span = span.enter();
            self.publish();
        }
        if first {
            tracing::info!(
                services = self.index.services.len(),
                endpoint_slices = self.index.endpoint_slices.len(),
                upstreams = self.desired.borrow().len(),
                "read the first config state"
            );
            self.initialized.send_replace(true);
        }
    }
}
