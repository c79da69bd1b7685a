//! Leader election on a `coordination.k8s.io/v1` Lease, for writers that must be single (the
//! gateway's Proxy and status writers). Every write of the Lease carries the resourceVersion
//! read just before (create, or replace with optimistic concurrency): two candidates can
//! never both win the same term. (The kube-leader-election crate patches without that
//! precondition, so two replicas racing for an expired lease could both believe they lead.)
//!
//! As in client-go, expiry is judged on this process's clock from the moment the record was
//! last seen to change, so clock skew between replicas does not matter; and a leader that
//! cannot renew within `renew_deadline` (shorter than the lease) stops leading before any
//! other replica may take over, so writes are never doubled.
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use tokio::{sync::watch, time::Instant};

use crate::shutdown::Shutdown;

/// Which Lease, who we are, and the timings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (pod name, or host and pid).
    pub identity: String,
    /// How long a holder keeps the lease without renewing it.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops leading (< `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the Lease is read and renewed.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What one reading of the Lease tells a candidate to do.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Create,
    /// Take over an expired or released lease.
    Acquire,
    Renew,
    /// Someone else holds it.
    Follow(String),
}

/// The record as last seen, and when it was seen to change (our clock).
#[derive(Debug, Default)]
struct Observed {
    record: Option<(String, Option<MicroTime>)>,
    since: Option<Instant>,
}

fn decide(lease: Option<&Lease>, me: &str, seen: &mut Observed, now: Instant, duration: Duration) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::Acquire; // released by its last holder
    }
    let record = Some((holder.clone(), spec.renew_time.clone()));
    if seen.record != record {
        seen.record = record;
        seen.since = Some(now);
    }
    let held_for = spec
        .lease_duration_seconds
        .map_or(duration, |s| Duration::from_secs(s.max(1) as u64));
    match seen.since {
        Some(since) if now.duration_since(since) > held_for => Step::Acquire,
        _ => Step::Follow(holder),
    }
}

fn lease_record(config: &LeaseConfig, base: Option<Lease>, acquire: bool) -> Lease {
    let now = MicroTime(Timestamp::now());
    let mut lease = base.unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            ..Default::default()
        },
        spec: Some(LeaseSpec::default()),
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if acquire {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.lease_duration_seconds = Some(config.lease_duration.as_secs().max(1) as i32);
    spec.renew_time = Some(now);
    lease
}

/// One round: read the Lease and take, keep or leave it. `Ok(true)`: we hold it now.
async fn try_lead(api: &Api<Lease>, config: &LeaseConfig, seen: &mut Observed) -> Result<bool, kube::Error> {
    let current = api.get_opt(&config.name).await?;
    let step = decide(
        current.as_ref(),
        &config.identity,
        seen,
        Instant::now(),
        config.lease_duration,
    );
    let written = match step {
        Step::Follow(_) => return Ok(false),
        Step::Create => {
            api.create(&PostParams::default(), &lease_record(config, None, true))
                .await
        }
        // `current` carries its resourceVersion: a concurrent writer makes this fail (409).
        Step::Acquire | Step::Renew => {
            let acquire = step == Step::Acquire;
            api.replace(
                &config.name,
                &PostParams::default(),
                &lease_record(config, current, acquire),
            )
            .await
        }
    };
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false), // lost the race
        Err(error) => Err(error),
    }
}

/// Gives up the lease on shutdown, so another replica takes over at once.
async fn release(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    api.replace(&config.name, &PostParams::default(), &lease).await?;
    Ok(())
}

/// Runs the election until shutdown. The receiver is true while this replica leads; it
/// turns false before any other replica can take over. The task ends after shutdown, once
/// a held lease is released (await it so that a successor starts at once).
pub fn spawn_leader_election(
    client: kube::Client,
    config: LeaseConfig,
    shutdown: Shutdown,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (leading_tx, leading) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut seen = Observed::default();
        let mut renewed: Option<Instant> = None;
        loop {
            match try_lead(&api, &config, &mut seen).await {
                Ok(true) => renewed = Some(Instant::now()),
                Ok(false) => renewed = None,
                Err(error) => tracing::warn!(lease = %config.name, %error, "cannot read or renew the lease"),
            }
            let leads = renewed.is_some_and(|at| at.elapsed() < config.renew_deadline);
            if !leads {
                renewed = None;
            }
            if *leading_tx.borrow() != leads {
                tracing::info!(lease = %config.name, identity = %config.identity, leading = leads, "leadership changed");
                leading_tx.send_replace(leads);
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(config.retry_period) => {}
            }
        }
        let was_leading = leading_tx.send_replace(false);
        if was_leading && let Err(error) = release(&api, &config).await {
            tracing::warn!(lease = %config.name, %error, "cannot release the lease");
        }
    });
    (leading, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn lease(holder: &str, renewed_at_second: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed_at_second).expect("timestamp"))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn no_lease_is_created_and_ours_is_renewed() {
        let mut seen = Observed::default();
        let now = Instant::now();
        assert_eq!(decide(None, "a", &mut seen, now, LEASE), Step::Create);
        assert_eq!(decide(Some(&lease("a", 1)), "a", &mut seen, now, LEASE), Step::Renew);
    }

    #[test]
    fn another_holder_is_followed_until_its_record_stops_changing_for_a_lease_duration() {
        let mut seen = Observed::default();
        let t0 = Instant::now();
        let held = lease("b", 1);
        assert_eq!(decide(Some(&held), "a", &mut seen, t0, LEASE), Step::Follow("b".into()));
        // Renewed (the record changed): the clock starts again.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            decide(Some(&lease("b", 11)), "a", &mut seen, t1, LEASE),
            Step::Follow("b".into())
        );
        let t2 = t1 + Duration::from_secs(14);
        assert_eq!(
            decide(Some(&lease("b", 11)), "a", &mut seen, t2, LEASE),
            Step::Follow("b".into())
        );
        let t3 = t1 + Duration::from_secs(16);
        assert_eq!(decide(Some(&lease("b", 11)), "a", &mut seen, t3, LEASE), Step::Acquire);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut seen = Observed::default();
        assert_eq!(
            decide(Some(&lease("", 1)), "a", &mut seen, Instant::now(), LEASE),
            Step::Acquire
        );
    }
}
