//! Snapshots by Envoy role (`<namespace>~<gateway>`), each behind a watch channel so every
//! ADS stream of that role wakes on a change and reads the latest snapshot.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

use super::Snapshot;

pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;
type SnapshotTx = watch::Sender<Option<Arc<Snapshot>>>;

/// What the ADS service needs from the state: a subscription per role.
pub trait SnapshotSource: Clone + Send + Sync + 'static {
    fn subscribe(&self, role: &str) -> SnapshotRx;

    /// The current snapshot of `role`, if it has one (REST xDS polls this).
    fn snapshot(&self, role: &str) -> Option<Arc<Snapshot>> {
        self.subscribe(role).borrow().clone()
    }
}

#[derive(Clone, Default)]
pub struct SnapshotCache {
    roles: Arc<Mutex<BTreeMap<String, SnapshotTx>>>,
}

impl SnapshotCache {
    /// Publishes (or with None, withdraws) the snapshot of `role`. Unchanged snapshots are
    /// not republished.
    pub fn set(&self, role: &str, snapshot: Option<Arc<Snapshot>>) {
        let mut roles = self.roles.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sender = roles.entry(role.to_string()).or_insert_with(|| watch::channel(None).0);
        sender.send_if_modified(|current| {
            // By version (hashes of the bytes): not a comparison of every resource.
            let same = match (current.as_deref(), snapshot.as_deref()) {
                (Some(a), Some(b)) => a.same_versions(b),
                (None, None) => true,
                _ => false,
            };
            if same {
                return false;
            }
            *current = snapshot;
            true
        });
    }

    pub fn roles(&self) -> Vec<String> {
        let roles = self.roles.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        roles
            .iter()
            .filter(|(_, tx)| tx.borrow().is_some())
            .map(|(role, _)| role.clone())
            .collect()
    }
}

impl SnapshotSource for SnapshotCache {
    /// Looks the role up without adding it: pollers of unknown roles leave nothing behind.
    fn snapshot(&self, role: &str) -> Option<Arc<Snapshot>> {
        let roles = self.roles.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        roles.get(role).and_then(|tx| tx.borrow().clone())
    }

    fn subscribe(&self, role: &str) -> SnapshotRx {
        let mut roles = self.roles.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        roles
            .entry(role.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }
}
