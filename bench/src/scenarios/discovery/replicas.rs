//! `discovery` processes started by the scenario itself (the harness `System` runs one per
//! system, the failover needs three), and what NATS says about them: the streams of the
//! buckets they write and the shard leases they hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use async_nats::jetstream::{self, kv, stream::State};
use futures::StreamExt as _;
use kgw_harness::{Process, bins};

/// One replica's SIGTERM grace (it flushes its writer and releases its leases).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Replicas of `discovery` on one config dir and one broker, each with its own health
/// file and log. Dropping it stops them (each by its own pid).
pub struct Replicas {
    config: PathBuf,
    nats_url: String,
    dir: PathBuf,
    pub procs: Vec<Process>,
}

impl Replicas {
    pub fn new(config: &Path, nats_url: &str, dir: &Path) -> Self {
        Replicas {
            config: config.to_path_buf(),
            nats_url: nats_url.to_string(),
            dir: dir.to_path_buf(),
            procs: Vec::new(),
        }
    }

    /// Starts replica `procs.len()`; its index.
    pub fn add(&mut self) -> Result<usize> {
        let n = self.procs.len();
        // An open broker and `--insecure-no-mtls`: see the scenario's module comment.
        let args: Vec<String> = vec![
            "--config-dir".into(),
            self.config.display().to_string(),
            "--nats-url".into(),
            self.nats_url.clone(),
            "--insecure-no-mtls".into(),
            "--health-file".into(),
            self.health_file(n).display().to_string(),
        ];
        let log = self.dir.join(format!("discovery-{n}.log"));
        let mut p = Process::new("discovery", bins::bin(bins::DISCOVERY)?, args, log);
        p.start()?;
        self.procs.push(p);
        Ok(n)
    }

    pub fn health_file(&self, n: usize) -> PathBuf {
        self.dir.join(format!("discovery-{n}-healthy"))
    }

    pub fn pid(&self, n: usize) -> Result<u32> {
        self.procs
            .get(n)
            .and_then(Process::pid)
            .ok_or_else(|| anyhow!("discovery replica {n} has no pid"))
    }

    /// SIGTERM replica `n` (SIGKILL after a grace), then start it again.
    pub async fn restart(&mut self, n: usize) -> Result<()> {
        self.procs[n].stop(STOP_GRACE).await?;
        // Gone after a graceful stop; a stale one (SIGKILL after the grace) would say
        // healthy too soon.
        let file = self.health_file(n);
        if file.exists() {
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
        self.procs[n].start()
    }

    /// Waits until replica `n` has (re)written its health file: connected to NATS, its
    /// config read.
    pub async fn until_healthy(&mut self, n: usize, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let file = self.health_file(n);
        while !file.exists() {
            self.check(n)?;
            if started.elapsed() > timeout {
                bail!(
                    "discovery {n} not healthy after {timeout:?}: {}",
                    self.procs[n].log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    }

    /// An error with the log's tail if replica `n` has exited.
    pub fn check(&mut self, n: usize) -> Result<()> {
        let p = &mut self.procs[n];
        match p.exit_status() {
            Some(st) => bail!("discovery {n} exited ({st}): {}", p.log_tail(20)),
            None => Ok(()),
        }
    }

    /// The replica whose announced name (`<host>-<pid>`) is `name`.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        (0..self.procs.len()).find(|&n| self.pid(n).is_ok_and(|pid| name.ends_with(&format!("-{pid}"))))
    }

    /// The log tail of every replica, for an error.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .enumerate()
            .map(|(n, p)| format!("discovery-{n}:\n{}", p.log_tail(10)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The state of the stream of KV bucket `bucket` (`KV_<bucket>`): `last_sequence` moves
/// with every write, `subjects_count` is the number of keys.
pub async fn stream_state(js: &jetstream::Context, bucket: &str) -> Result<State> {
    let stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .with_context(|| format!("stream KV_{bucket}"))?;
    Ok(stream.cached_info().state.clone())
}

/// Polls the stream of `bucket` (every 10 ms) until it holds `keys` keys; how long from
/// `since`.
pub async fn until_keys(
    js: &jetstream::Context,
    bucket: &str,
    keys: u64,
    since: Instant,
    timeout: Duration,
) -> Result<Duration> {
    let mut last = 0;
    loop {
        // The bucket does not exist until discovery has created it.
        if let Ok(state) = stream_state(js, bucket).await {
            last = state.subjects_count;
            if last >= keys {
                return Ok(since.elapsed());
            }
        }
        if since.elapsed() > timeout {
            bail!("{bucket}: {last} of {keys} keys after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The shard leases: shard → owner (a replica name), and the live members' names.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leases {
    pub owners: BTreeMap<u16, String>,
    pub members: Vec<String>,
}

impl Leases {
    pub async fn read(store: &kv::Store) -> Result<Leases> {
        let mut out = Leases::default();
        let mut keys = store.keys().await?;
        while let Some(key) = keys.next().await {
            let key = key?;
            // A key may expire between the listing and the read.
            let Some(value) = store.get(&key).await? else {
                continue;
            };
            if let Some(name) = key.strip_prefix("member.") {
                out.members.push(name.to_string());
            } else if let Some(shard) = key.strip_prefix("shard.").and_then(|s| s.parse().ok()) {
                out.owners.insert(shard, String::from_utf8_lossy(&value).into_owned());
            }
        }
        out.members.sort();
        Ok(out)
    }

    /// Shards per owner, largest first (`[6, 5, 5]` for 16 over 3).
    pub fn shares(&self) -> Vec<usize> {
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for owner in self.owners.values() {
            *counts.entry(owner).or_default() += 1;
        }
        let mut out: Vec<usize> = counts.into_values().collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// Every one of `shards` shards owned, each by one of `live`.
    pub fn all_owned_by(&self, shards: u16, live: &[String]) -> bool {
        self.owners.len() == usize::from(shards) && self.owners.values().all(|o| live.contains(o))
    }
}

/// Even shares of `shards` over `replicas` (16 over 3: `[6, 5, 5]`).
pub fn even_shares(shards: usize, replicas: usize) -> Vec<usize> {
    (0..replicas)
        .map(|i| shards / replicas + usize::from(i < shards % replicas))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_owners() {
        assert_eq!(even_shares(16, 3), [6, 5, 5]);
        assert_eq!(even_shares(16, 2), [8, 8]);
        let leases = Leases {
            owners: (0..16u16).map(|s| (s, format!("h-{}", s % 3))).collect(),
            members: vec!["h-0".into(), "h-1".into(), "h-2".into()],
        };
        assert_eq!(leases.shares(), [6, 5, 5]);
        assert!(leases.all_owned_by(16, &leases.members));
        assert!(!leases.all_owned_by(16, &leases.members[..2]));
    }
}
