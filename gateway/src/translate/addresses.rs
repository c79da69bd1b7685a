//! A Gateway's `spec.addresses`: what type of address it asks for, and whether Envoy can
//! bind it here.
use gateway_api::apis::experimental::gateways::Gateway;

use super::gateway_status::set;
use super::status::{Condition, StatusReport};

/// Accepted=False/UnsupportedAddress for an address of a type other than IPAddress;
/// Programmed=False/AddressNotUsable for an IP address Envoy cannot bind.
pub(super) fn report(status: &mut StatusReport, gw_key: &str, gateway: &Gateway, options: &super::Options) {
    let Some(gw) = status.gateways.get_mut(gw_key) else {
        return;
    };
    let mut unsupported = Vec::new();
    let mut unusable = Vec::new();
    for address in gateway.spec.addresses.iter().flatten() {
        let value = address.value.as_deref().unwrap_or("");
        match address.r#type.as_deref().unwrap_or("IPAddress") {
            "IPAddress" if value.is_empty() => {}
            "IPAddress" => match value.parse() {
                Ok(ip) if options.can_bind(ip) => {}
                _ => unusable.push(value.to_string()),
            },
            other => unsupported.push(format!("{other} {value}")),
        }
    }
    if !unsupported.is_empty() {
        set(
            &mut gw.conditions,
            Condition::new(
                "Accepted",
                false,
                "UnsupportedAddress",
                format!("only IPAddress addresses are supported: {}", unsupported.join(", ")),
            ),
        );
        set(
            &mut gw.conditions,
            Condition::new("Programmed", false, "Invalid", "the Gateway is not accepted"),
        );
    } else if !unusable.is_empty() {
        set(
            &mut gw.conditions,
            Condition::new(
                "Programmed",
                false,
                "AddressNotUsable",
                format!("Envoy cannot bind {}", unusable.join(", ")),
            ),
        );
    }
}
