//! What to say when routes do not serve: Envoy's own view of its route tables and xDS
//! counters, and what our processes and Envoy logged as errors. A failed load is rare and
//! may not happen again on the next run: the report must carry enough to tell where the
//! change stopped (our translation, the xDS push, or Envoy).
use kgw_harness::Component;
use serde_json::Value;

use super::fleet::Fleet;

/// Envoy's route tables as `table: N virtual hosts (host: M routes, ...)`, its non-zero
/// RDS/VHDS/control-plane counters, and up to `lines` error lines per process.
pub(super) async fn why_not_served(fleet: &Fleet, lines: usize) -> String {
    let routes = match envoy_route_tables(fleet).await {
        Ok(tables) => tables,
        Err(e) => format!("config_dump unreadable: {e:#}"),
    };
    let counters = match envoy_xds_counters(fleet).await {
        Ok(counters) => counters,
        Err(e) => format!("stats unreadable: {e:#}"),
    };
    let logged: Vec<String> = [Component::Gateway, Component::Controller, Component::Envoy]
        .into_iter()
        .flat_map(|c| {
            fleet
                .system
                .log_tail(c, 2000)
                .lines()
                .map(plain)
                .filter(|l| is_error(l))
                .take(lines)
                .map(|l| format!("{c}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    format!("Envoy's route tables: {routes}; Envoy's xDS counters: {counters}; errors logged: {logged:?}")
}

fn is_error(line: &str) -> bool {
    ["ERROR", "WARN", "[error]", "[warning]", "too large", "rejected"]
        .iter()
        .any(|m| line.contains(m))
}

/// Per dynamic route table: its virtual hosts, the first few with their route counts.
async fn envoy_route_tables(fleet: &Fleet) -> anyhow::Result<String> {
    let url = fleet.system.admin_url("/config_dump?resource=dynamic_route_configs");
    let text = kgw_harness::get(&url, None).await?.text();
    let dump: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{e}: {}", text.chars().take(200).collect::<String>()))?;
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    let tables: Vec<String> = configs
        .iter()
        .map(|c| {
            let table = &c["route_config"];
            let hosts = table["virtual_hosts"].as_array().cloned().unwrap_or_default();
            let first: Vec<String> = hosts
                .iter()
                .take(3)
                .map(|h| {
                    let routes = h["routes"].as_array().map_or(0, Vec::len);
                    format!("{}: {routes} routes", h["name"].as_str().unwrap_or("?"))
                })
                .collect();
            format!(
                "{} (version {}): {} virtual hosts ({})",
                table["name"].as_str().unwrap_or("?"),
                c["version_info"].as_str().unwrap_or("?"),
                hosts.len(),
                first.join(", ")
            )
        })
        .collect();
    Ok(if tables.is_empty() {
        "none".into()
    } else {
        tables.join("; ")
    })
}

async fn envoy_xds_counters(fleet: &Fleet) -> anyhow::Result<String> {
    let url = fleet.system.admin_url("/stats?filter=(vhds|\\.rds\\.|control_plane)");
    let text = kgw_harness::get(&url, None).await?.text();
    let nonzero: Vec<&str> = text
        .lines()
        .filter(|l| l.rsplit_once(": ").is_some_and(|(_, v)| v.trim() != "0"))
        .collect();
    Ok(nonzero.join(", "))
}

/// A log line without its terminal colours.
pub(super) fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // Skip to the end of the escape sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(super::plain("\u{1b}[31mERROR\u{1b}[0m too large"), "ERROR too large");
    }

    #[test]
    fn error_lines_of_ours_and_envoys() {
        assert!(super::is_error("2026-12-06T18:00:00Z ERROR controller: boom"));
        assert!(super::is_error(
            "[2026-12-06][warning][config] gRPC config for x rejected"
        ));
        assert!(!super::is_error("INFO applied"));
    }
}
