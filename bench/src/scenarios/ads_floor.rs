//! `envoy_floor_ads_ms`: Envoy's own time to apply a route table pushed over ADS (state of
//! the world), without the rest of our system. A fresh Envoy of our own takes its route
//! table over ADS from a minimal server in this process (the controller's snapshot cache
//! and ADS service, nothing else); each sample pushes the whole table with one more route
//! and times from the push until the new route first answers 200: the change our system
//! makes per new route, in the same shape and at the same size.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use controller::xds::ads::AdsService;
use controller::xds::snapshot::PackedResources;
use controller::xds::stats::XdsStats;
use controller::xds::{Snapshot, SnapshotCache};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::util::pack_any;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::envoy_static::{self, AccessLog, Routes, StaticEnvoy};
use super::fleet::{Fleet, Poller};
use super::propagation::Samples;
use super::{Plan, ms};
use crate::routeset::{self, Shape};

const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The role in the bootstrap's node metadata (`envoy_static::bootstrap`).
const ROLE: &str = "default~gw";

/// The controller's ADS service over a snapshot cache of our own, on loopback, plaintext
/// (mTLS off: every peer may read every role). Stopped on drop.
struct AdsServer {
    cache: SnapshotCache,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl AdsServer {
    fn start(ip: std::net::IpAddr) -> Result<Self> {
        let incoming = tonic::transport::server::TcpIncoming::bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding the ADS server on {ip}"))?
            .with_nodelay(Some(true));
        let addr = incoming.local_addr()?;
        let cache = SnapshotCache::default();
        let service = AdsService::new(cache.clone(), Arc::new(XdsStats::default())).into_server();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    stopped.await.ok();
                })
                .await;
            if let Err(e) = served {
                eprintln!("kgw-bench: the floor's ADS server stopped: {e}");
            }
        });
        Ok(AdsServer {
            cache,
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// Publishes `snapshot` for the role: the push to Envoy starts here.
    fn push(&self, snapshot: Snapshot) {
        self.cache.set(ROLE, Some(Arc::new(snapshot)));
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// The route table of a set of `n` routes in `shape`, as our controller shapes it: per route
/// a path-separated prefix (Gateway API's PathPrefix) to its Service's cluster.
struct Table {
    shape: Shape,
    config: RouteConfiguration,
}

impl Table {
    fn new(shape: Shape, name: &str, n: usize) -> Self {
        let mut table = Table {
            shape,
            config: RouteConfiguration {
                name: name.to_string(),
                ..Default::default()
            },
        };
        let services = routeset::services_for(n);
        for i in 0..n {
            table.add(&routeset::route_name(i), &routeset::service_of(i, services));
        }
        table
    }

    /// Route `name` to Service `svc`: a virtual host of its own (spread), or one more route
    /// at the end of the one virtual host (its prefix overlaps no other).
    fn add(&mut self, name: &str, svc: &str) {
        let route = Route {
            name: name.to_string(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(format!("/{name}"))),
                ..Default::default()
            }),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(routeset::cluster_name(svc))),
                ..Default::default()
            })),
            ..Default::default()
        };
        let vhosts = &mut self.config.virtual_hosts;
        match self.shape {
            Shape::OneHost if !vhosts.is_empty() => vhosts[0].routes.push(route),
            _ => vhosts.push(VirtualHost {
                name: name.to_string(),
                domains: vec![self.shape.host(name)],
                routes: vec![route],
                ..Default::default()
            }),
        }
    }

    /// The snapshot serving this table alone (the rest of the config is static).
    fn snapshot(&self) -> Snapshot {
        Snapshot::from_packed(PackedResources {
            routes: BTreeMap::from([(self.config.name.clone(), pack_any(self.config.clone()))]),
            ..Default::default()
        })
    }
}

/// `count` samples at `n` routes of `shape`, each a push of the whole table with one more
/// route to a fresh Envoy (started for this size), timed until that route answers 200;
/// stopped short once `budget` is spent.
pub async fn floor(
    fleet: &Fleet,
    plan: &Plan,
    shape: Shape,
    n: usize,
    count: usize,
    budget: Option<Duration>,
) -> Result<Samples> {
    let work = fleet.scratch(&format!("ads-floor-{}-{n}", shape.key()))?;
    let server = AdsServer::start(fleet.spare_ip(4))?;
    let ip = fleet.spare_ip(3);
    let (admin, listen) = (SocketAddr::new(ip, 19000), SocketAddr::new(ip, 8080));
    let mut table = Table::new(shape, &format!("listener~{}", listen.port()), n);
    // Envoy's first table is there when it asks (it waits for it before listening).
    server.push(table.snapshot());
    let config = envoy_static::bootstrap(
        admin,
        listen,
        Routes::Ads(server.addr),
        envoy_static::service_clusters(n, &fleet.backends),
        AccessLog::None,
    )?;
    let envoy = StaticEnvoy::start("envoy-ads-floor", &work, &config, listen).await?;
    let poller = Poller::new(envoy.listen);
    let last = routeset::route_name(n - 1);
    poller
        .until_200(
            &shape.host(&last),
            &routeset::request_path(&last),
            Instant::now(),
            plan.load_timeout,
        )
        .await
        .with_context(|| format!("Envoy over ADS never served its first {n} routes"))?;
    let services = routeset::services_for(n);
    let mut out = Samples::default();
    let began = Instant::now();
    for k in 0..count {
        if out.over(k, began, budget) {
            break;
        }
        let new = format!("ads{n}-{k}");
        table.add(&new, &routeset::service_of(k * routeset::ROUTES_PER_SERVICE, services));
        // Encoded and hashed before the clock starts: what is timed is the push and Envoy.
        let snapshot = table.snapshot();
        tokio::time::sleep(plan.sample_gap).await;
        let started = Instant::now();
        server.push(snapshot);
        match poller
            .until_200(
                &shape.host(&new),
                &routeset::request_path(&new),
                started,
                SAMPLE_TIMEOUT,
            )
            .await
        {
            Ok(took) => out.ms.push(ms(took)),
            Err(e) => out.failures.push(format!("{e:#}")),
        }
    }
    // Envoy first, then its server.
    drop(envoy);
    drop(server);
    anyhow::ensure!(
        !out.ms.is_empty(),
        "Envoy over ADS never served a new route: {:?}",
        out.failures
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_the_shape() {
        let spread = Table::new(Shape::Spread, "t", 10);
        assert_eq!(spread.config.virtual_hosts.len(), 10);
        let mut one = Table::new(Shape::OneHost, "t", 10);
        one.add("extra", "svc-0");
        assert_eq!(one.config.virtual_hosts.len(), 1);
        assert_eq!(one.config.virtual_hosts[0].routes.len(), 11);
        assert_eq!(one.config.virtual_hosts[0].domains, [routeset::ONE_HOST]);
    }
}
