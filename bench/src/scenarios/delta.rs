//! `xds_bytes_per_route_change_delta`: `xds_bytes_per_route_change` with Envoy on delta
//! ADS, where route tables come without their virtual hosts and a route change sends its
//! one VirtualHost (VHDS). A system of its own grown through the same sizes, measured the
//! same way ([`growth::bytes_per_route_change`]); the bytes per type URL are under
//! `details` (besides the VirtualHost, any on-demand answers Envoy asked for while the
//! new host was polled before it was pushed).

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
        |config| config.xds_protocol = XdsProtocol::Delta,
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
                eprintln!("kgw-bench: delta xDS at {n} routes: {total} bytes per route change");
                report.set_in("xds_bytes_per_route_change_delta", &Plan::key(n), json!(total));
                by_type.insert(Plan::key(n), json!(xds));
            }
            Err(e) => report.error(&format!("xds_bytes_per_route_change_delta at {n}"), &e),
        }
    }
    report.detail("xds_bytes_per_route_change_delta_by_type", by_type.into());
    Ok(())
}
