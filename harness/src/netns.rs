//! Test hosts of our own for backends that a Kubernetes EndpointSlice lists. The API server
//! refuses loopback (and link-local) addresses in EndpointSlices, and a test must not aim at
//! any other address of the machine; so such backends run in a network namespace this
//! harness creates, joined to ours by a veth pair and addressed from 198.18.0.0/15 (RFC
//! 2544's benchmarking range, which is never routed). Traffic stays inside the machine.
//!
//! Each host takes a /30 (ours `.1`, the host's `.2`) by index, held with a lock file like
//! the loopback blocks of [`crate::addr`], so tests side by side never collide. Creating a
//! namespace needs root (CAP_NET_ADMIN), as CI and the development machines run. A
//! blackhole route for the whole range keeps a packet for a host that is gone on this
//! machine too.
use std::fs::{File, TryLockError};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{bins, process::Process};

/// /30 subnets in 198.18.0.0/15.
const HOSTS: u32 = 1 << 15;

/// A network namespace with one address, and the processes started in it.
pub struct TestHost {
    index: u32,
    processes: Vec<Process>,
    log_dir: tempfile::TempDir,
    _lock: File,
}

impl TestHost {
    /// Creates the namespace and its link (removing a leftover of a crashed run first).
    pub fn create() -> Result<TestHost> {
        let (index, lock) = lock_an_index()?;
        let host = TestHost {
            index,
            processes: Vec::new(),
            log_dir: tempfile::Builder::new().prefix("kgw-netns-").tempdir()?,
            _lock: lock,
        };
        host.remove_links();
        let (ns, outer, inner) = (host.namespace(), host.outer_link(), host.inner_link());
        let ours = format!("{}/30", host.gateway_ip());
        let theirs = format!("{}/30", host.ip());
        // Nothing in the range ever leaves the machine: what no test host holds is dropped.
        ip(&["route", "replace", "blackhole", "198.18.0.0/15"])?;
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["addr", "add", &ours, "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "addr", "add", &theirs, "dev", &inner])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// The host's address, as a Service's EndpointSlice lists it.
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.address(2))
    }

    /// The namespace's name (`ip netns exec NAME ...`).
    pub fn namespace_name(&self) -> String {
        self.namespace()
    }

    /// Our end of the link.
    fn gateway_ip(&self) -> Ipv4Addr {
        self.address(1)
    }

    fn address(&self, host: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + self.index * 4 + host)
    }

    fn namespace(&self) -> String {
        format!("kgw-{}", self.index)
    }

    fn outer_link(&self) -> String {
        format!("kgwv{}a", self.index)
    }

    fn inner_link(&self) -> String {
        format!("kgwv{}b", self.index)
    }

    /// Starts the echo backend `name` inside the namespace on `port`; returns its address
    /// once it answers.
    pub fn spawn_echo(&mut self, name: &str, port: u16) -> Result<SocketAddr> {
        let addr = SocketAddr::new(self.ip(), port);
        let echo = bins::bin(bins::ECHO_BACKEND)?;
        let log = self.log_dir.path().join(format!("{name}.log"));
        // `ip netns exec` execs the program: the pid is the backend's own.
        let args = [
            "netns".to_string(),
            "exec".into(),
            self.namespace(),
            echo.display().to_string(),
            "--listen".into(),
            addr.to_string(),
            "--name".into(),
            name.into(),
        ];
        let mut process = Process::new(name, "ip", args, &log);
        process.start()?;
        self.processes.push(process);
        wait_listening(addr)?;
        Ok(addr)
    }

    fn remove_links(&self) {
        // Best effort: a leftover of a crashed run under the same (now locked) index.
        let _ = quiet_ip(&["netns", "del", &self.namespace()]);
        let _ = quiet_ip(&["link", "del", &self.outer_link()]);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // The namespace lives on while a process is in it: stop them first.
        for process in &mut self.processes {
            let _ = process.kill9();
        }
        self.remove_links();
    }
}

fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("echo backend on {addr} (test host namespace) did not start listening");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2) to create a test host namespace")?;
    if !output.status.success() {
        bail!(
            "ip {}: {} (test hosts need root: CAP_NET_ADMIN)",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn quiet_ip(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
}

fn lock_an_index() -> Result<(u32, File)> {
    let dir: PathBuf = std::env::temp_dir().join("kgw-harness-netns");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let start = std::process::id().wrapping_mul(7919) % HOSTS;
    for i in 0..HOSTS {
        let index = (start + i) % HOSTS;
        let file = File::create(dir.join(index.to_string()))?;
        match file.try_lock() {
            Ok(()) => return Ok((index, file)),
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
    }
    bail!("no free test host index")
}
