//! What /proc says about a process: peak resident memory and CPU time.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};

/// `VmHWM` (peak resident set) of `pid`, in MiB.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    status_kib(pid, "VmHWM:").map(|kib| kib as f64 / 1024.0)
}

/// `VmRSS` (current resident set) of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    status_kib(pid, "VmRSS:").map(|kib| kib as f64 / 1024.0)
}

/// `RssFile` (resident file-backed pages: the binary's code and data) of `pid`, in MiB.
pub fn rss_file_mib(pid: u32) -> Result<f64> {
    status_kib(pid, "RssFile:").map(|kib| kib as f64 / 1024.0)
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .ok_or_else(|| anyhow!("{path} has no {field}"))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("{path}: {line}"))
}

/// User + system CPU time `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("{path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .ok_or_else(|| anyhow!("{path}: too few fields"))?
            .parse()
            .with_context(|| format!("{path}: field {i}"))
    };
    let ticks = tick(14)? + tick(15)?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// `model name` of the first CPU in /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(peak_rss_mib(pid).unwrap() > 0.0);
        assert!(rss_mib(pid).unwrap() > 0.0);
        cpu_time(pid).unwrap();
    }
}
