//! `xds_bytes_per_route_change_sotw`: `xds_bytes_per_route_change` with Envoy on state of
//! the world ADS (the chart's `envoy.xdsProtocol: sotw`), where a route change sends its
//! listener's whole route table, for comparison with the default (delta, measured by
//! [`growth`]). A system of its own grown through the same sizes, measured the same way
//! ([`growth::bytes_per_route_change`]); the bytes per type URL are under `details`.

use anyhow::Result;
use kgw_harness::envoy::XdsProtocol;
use kgw_harness::write_manifest_atomically;
use serde_json::json;

use super::fleet::Fleet;
use super::{Plan, Report, growth};
use crate::routeset::{self, Shape};

pub async fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let fleet = Fleet::start_with(
        |dir, _| {
            write_manifest_atomically(dir, "gateway.yaml", &routeset::gateway_yaml())?;
            Ok(())
        },
        |config| config.xds_protocol = XdsProtocol::StateOfTheWorld,
    )
    .await?;
    let mut loaded = 0;
    let mut by_type = serde_json::Map::new();
    for n in plan.sizes {
        growth::grow(&fleet, plan, Shape::Spread, loaded, n).await?;
        loaded = n;
        match growth::bytes_per_route_change(&fleet, n).await {
            Ok((_, xds)) => {
                let total: u64 = xds.values().sum();
                eprintln!("kgw-bench: state-of-the-world xDS at {n} routes: {total} bytes per route change");
                report.set_in("xds_bytes_per_route_change_sotw", &Plan::key(n), json!(total));
                by_type.insert(Plan::key(n), json!(xds));
            }
            Err(e) => report.error(&format!("xds_bytes_per_route_change_sotw at {n}"), &e),
        }
    }
    report.detail("xds_bytes_per_route_change_sotw_by_type", by_type.into());
    Ok(())
}
