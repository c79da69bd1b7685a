//! `gateway status`: prints the status the reporter keeps in NATS (directory mode's
//! stand-in for `kubectl get -o yaml`), one YAML document per resource.
use kgw_common::{bus, shutdown::Shutdown};
use kgw_proto::nats::STATUS_BUCKET;

use crate::run::GatewayError;

pub async fn print_status(nats_url: &str, auth: &bus::NatsAuth, filter: Option<&str>) -> Result<String, GatewayError> {
    let shutdown = Shutdown::new();
    let bus = bus::connect(nats_url, "gateway-status", auth).await?;
    let wait = tokio::time::timeout(std::time::Duration::from_secs(10), bus.kv(STATUS_BUCKET, &shutdown));
    let store = match wait.await {
        Ok(store) => store?,
        Err(_) => {
            return Err(GatewayError::Bus(bus::BusError::Bucket {
                bucket: STATUS_BUCKET.into(),
                message: format!("no answer from NATS at {nats_url} within 10 s"),
            }));
        }
    };
    let all = bus::read_all(&store).await.map_err(|message| bus::BusError::Bucket {
        bucket: STATUS_BUCKET.into(),
        message,
    })?;
    let mut out = String::new();
    for (key, value) in all {
        if filter.is_some_and(|f| !key.contains(f)) {
            continue;
        }
        out.push_str(&format!("--- # {key}\n{}", String::from_utf8_lossy(&value)));
    }
    Ok(out)
}
