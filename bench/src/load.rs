//! The load generator: Debian's `wrk` at its maximum rate, driven by a generated Lua script
//! that rotates over (Host, path) targets and prints its figures as one JSON line.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;

/// One request target: the Host header and the path.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub path: String,
}

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub targets: Vec<Target>,
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    /// Count every response that is not 2xx in Lua (slower); otherwise wrk's own count of
    /// status > 399.
    pub count_non_2xx: bool,
}

/// What one run measured.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LoadResult {
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    /// Responses that were not 2xx (or, without `count_non_2xx`, not below 400).
    pub non_2xx: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl LoadResult {
    pub fn socket_errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }
}

/// `wrk` on PATH.
pub fn wrk_path() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("wrk"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("wrk is not installed: run scripts/bench.sh (or `apt-get install -y wrk`)"))
}

/// The Lua script for `spec`.
pub fn script(spec: &LoadSpec) -> Result<String> {
    if spec.targets.is_empty() {
        bail!("no load targets");
    }
    let mut s = String::from("local targets = {\n");
    for t in &spec.targets {
        if [&t.host, &t.path].iter().any(|v| v.contains(['"', '\\', '\n'])) {
            bail!("target {t:?} needs quoting");
        }
        writeln!(s, "  {{\"{}\", \"{}\"}},", t.host, t.path)?;
    }
    s.push_str(
        r#"}
local n = #targets
local i = 0
local threads = {}
non2xx = 0
function setup(thread)
  table.insert(threads, thread)
end
function request()
  i = i % n + 1
  local t = targets[i]
  return wrk.format("GET", t[2], {["Host"] = t[1]})
end
"#,
    );
    if spec.count_non_2xx {
        s.push_str(
            r#"function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
"#,
        );
    }
    s.push_str(
        r#"function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (tonumber(t:get("non2xx")) or 0) end
  local e = summary.errors
  io.write(string.format(
    'KGW_WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"non2xx":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, bad,
    latency:percentile(50), latency:percentile(99)))
end
"#,
    );
    Ok(s)
}

#[derive(Deserialize)]
struct Line {
    requests: u64,
    duration_us: u64,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
    non2xx: u64,
    p50_us: u64,
    p99_us: u64,
}

/// The figures of wrk's output: the script's `KGW_WRK` line, checked against wrk's own
/// "Non-2xx or 3xx responses" line when present.
pub fn parse(stdout: &str, counted_non_2xx: bool) -> Result<LoadResult> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KGW_WRK "))
        .ok_or_else(|| anyhow!("no KGW_WRK line in wrk's output:\n{stdout}"))?;
    let l: Line = serde_json::from_str(line).with_context(|| format!("wrk summary {line}"))?;
    let seconds = l.duration_us as f64 / 1e6;
    // wrk prints "Non-2xx or 3xx responses: N" itself when N > 0 (status > 399).
    let wrk_status = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let over_399 = l.status.max(wrk_status);
    Ok(LoadResult {
        requests: l.requests,
        seconds,
        rps: if seconds > 0.0 {
            l.requests as f64 / seconds
        } else {
            0.0
        },
        non_2xx: if counted_non_2xx {
            l.non2xx.max(over_399)
        } else {
            over_399
        },
        connect_errors: l.connect,
        read_errors: l.read,
        write_errors: l.write,
        timeouts: l.timeout,
        p50_ms: l.p50_us as f64 / 1000.0,
        p99_ms: l.p99_us as f64 / 1000.0,
    })
}

/// Runs wrk for `spec.duration` (its script written into `work_dir`); killed if it
/// overruns, or if this future is dropped.
pub async fn run(spec: &LoadSpec, work_dir: &Path) -> Result<LoadResult> {
    let wrk = wrk_path()?;
    let script_path = work_dir.join(format!("wrk-{}.lua", std::process::id()));
    std::fs::write(&script_path, script(spec)?).with_context(|| format!("writing {}", script_path.display()))?;
    let secs = spec.duration.as_secs().max(1);
    let child = tokio::process::Command::new(&wrk)
        .arg(format!("-t{}", spec.threads.max(1)))
        .arg(format!("-c{}", spec.connections.max(spec.threads).max(1)))
        .arg(format!("-d{secs}s"))
        .args(["--timeout", "5s", "-s"])
        .arg(&script_path)
        .arg(format!("http://{}/", spec.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", wrk.display()))?;
    let limit = Duration::from_secs(secs + 30);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("wrk did not finish within {limit:?}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&stdout, spec.count_non_2xx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 2s test @ http://127.0.0.1:8080/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   610.28us  201.11us   5.00ms   90.00%
  3270 requests in 2.00s, 1.20MB read
  Non-2xx or 3xx responses: 7
Requests/sec:   1634.50
KGW_WRK {\"requests\":3270,\"duration_us\":2000000,\"connect\":0,\"read\":1,\"write\":0,\"status\":7,\"timeout\":2,\"non2xx\":9,\"p50_us\":600,\"p99_us\":1500}
";

    #[test]
    fn parses_the_summary_line() {
        let r = parse(OUT, true).unwrap();
        assert_eq!(r.requests, 3270);
        assert_eq!(r.non_2xx, 9);
        assert_eq!(r.socket_errors(), 3);
        assert!((r.rps - 1635.0).abs() < 1.0);
        assert!((r.p99_ms - 1.5).abs() < 1e-9);
        assert_eq!(parse(OUT, false).unwrap().non_2xx, 7);
        assert!(parse("Requests/sec: 1\n", false).is_err());
    }

    #[test]
    fn script_rotates_targets_and_refuses_quotes() {
        let spec = LoadSpec {
            addr: "127.0.0.1:8080".parse().unwrap(),
            targets: vec![Target {
                host: "a.local".into(),
                path: "/a".into(),
            }],
            threads: 1,
            connections: 1,
            duration: Duration::from_secs(1),
            count_non_2xx: true,
        };
        let s = script(&spec).unwrap();
        assert!(s.contains("{\"a.local\", \"/a\"}") && s.contains("function response"));
        let mut bad = spec.clone();
        bad.targets[0].host = "a\"b".into();
        assert!(script(&bad).is_err());
    }
}
