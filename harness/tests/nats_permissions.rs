//! The chart's NATS users and permissions (`deploy/helm/kgw/files/nats-permissions.json`)
//! are exactly `kgw_proto::nats::users`, the contract the processes and the harness use.
//! `UPDATE_NATS_PERMISSIONS=1 cargo test -p kgw-harness --test nats_permissions` rewrites it.
use std::path::Path;

use kgw_proto::nats::users;

fn generated() -> String {
    let mut all = serde_json::Map::new();
    for user in users::ALL {
        let permissions = users::permissions(user).expect("every user has permissions");
        all.insert(
            user.to_string(),
            serde_json::json!({"publish": permissions.publish, "subscribe": permissions.subscribe}),
        );
    }
    serde_json::to_string_pretty(&serde_json::Value::Object(all)).expect("json") + "\n"
}

#[test]
fn the_chart_ships_the_permissions_the_processes_need() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/kgw/files/nats-permissions.json");
    let want = generated();
    if std::env::var_os("UPDATE_NATS_PERMISSIONS").is_some() {
        std::fs::write(&path, &want).expect("write");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        have,
        want,
        "{} is stale: UPDATE_NATS_PERMISSIONS=1 to regenerate",
        path.display()
    );
}
