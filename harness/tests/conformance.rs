//! The Gateway API conformance runner on a Core subset (the whole run is the README's
//! `conformance` command): the same runner, so CI guards both it and the behaviour.
use anyhow::Result;
use kgw_harness::conformance::{self, RunOptions};

/// The Core tests CI keeps passing (issue 10 names these).
const CORE_SUBSET: &[&str] = &[
    "HTTPRouteSimpleSameNamespace",
    "HTTPRouteMatching",
    "HTTPRouteHeaderMatching",
    "HTTPRouteWeight",
    "HTTPRouteInvalidCrossNamespaceBackendRef",
    "GatewayInvalidTLSConfiguration",
    "HTTPRouteReferenceGrant",
    "HTTPRouteInvalidReferenceGrant",
    "HTTPRoutePathMatchOrder",
    "HTTPRouteMatchingAcrossRoutes",
    "HTTPRouteNoBackendRefs",
    "HTTPRouteHostnameIntersection",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_subset_of_the_suite_passes() -> Result<()> {
    let opts = RunOptions {
        tests: CORE_SUBSET.iter().map(|t| t.to_string()).collect(),
        ..RunOptions::default()
    };
    let report = conformance::run(&opts).await?;
    let table = report.render();
    println!("{table}");
    assert!(report.all_passed(), "conformance subset failed:\n{table}");
    let (passed, total) = report.totals();
    assert!(total > 0 && passed == total, "{passed}/{total}");
    Ok(())
}
