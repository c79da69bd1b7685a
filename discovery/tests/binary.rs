//! The built `discovery` binary: connected to NATS and writing upstreams, it has no
//! listening TCP socket, no bound UDP socket and no listening unix socket; SIGTERM stops it
//! with exit 0 and removes its health file.
#![forbid(unsafe_code)]

mod support;

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use async_nats::jetstream;
use kgw_proto::nats::UPSTREAMS_BUCKET;
use support::{NatsServer, SERVICE_API, SERVICE_WEB, eventually_blocking, web_slice};

const WAIT: Duration = Duration::from_secs(30);

/// Kills the process if the test ends before it exited.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Guard {
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        eventually_blocking(limit, "discovery to exit", || self.0.try_wait().expect("try_wait"))
    }
}

#[test]
fn binary_listens_on_nothing_and_stops_on_sigterm() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("mkdir");
    std::fs::write(config.join("web.yaml"), SERVICE_WEB).expect("write");
    std::fs::write(config.join("web-slice.yaml"), web_slice(&["10.0.0.1"])).expect("write");
    std::fs::write(config.join("api.yaml"), SERVICE_API).expect("write");
    let health = dir.path().join("healthy");
    let log = std::fs::File::create(dir.path().join("discovery.log")).expect("log");

    let child = Command::new(env!("CARGO_BIN_EXE_discovery"))
        .arg("--config-dir")
        .arg(&config)
        .args(["--nats-url", &nats.url, "--log-format", "json"])
        // About sockets, not TLS: a plain broker and no certificates.
        .arg("--insecure-no-mtls")
        .arg("--health-file")
        .arg(&health)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn discovery");
    let mut child = Guard(child);
    let pid = child.0.id();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keys = runtime.block_on(async {
        let client = async_nats::connect(&nats.url).await.expect("connect");
        let js = jetstream::new(client);
        tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(store) = js.get_key_value(UPSTREAMS_BUCKET).await
                    && let Ok(all) = kgw_common::bus::read_all(&store).await
                    && all.len() == 2
                {
                    return all.into_keys().collect::<Vec<_>>();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no upstreams written; log:\n{}", log_text(dir.path())))
    });
    assert_eq!(keys, ["default.default-api-8080", "default.default-web-80"]);
    eventually_blocking(WAIT, "health file", || health.exists().then_some(()));

    // The detector itself works: nats-server's listener shows.
    let nats_sockets = socket_inodes(nats.pid());
    let nats_listens = rows(nats.pid(), "tcp")
        .iter()
        .any(|r| nats_sockets.contains(&r.inode) && r.state == "0A");
    assert!(nats_listens, "listening-socket detection is broken");

    let sockets = socket_inodes(pid);
    assert!(
        !sockets.is_empty(),
        "discovery has no socket at all: not connected to NATS?"
    );
    let mut connected_to_nats = false;
    for table in ["tcp", "tcp6"] {
        for row in rows(pid, table).into_iter().filter(|r| sockets.contains(&r.inode)) {
            assert_ne!(row.state, "0A", "discovery listens on TCP {} ({table})", row.local);
            connected_to_nats |= row.state == "01" && port_of(&row.remote) == Some(nats.port);
        }
    }
    assert!(connected_to_nats, "no established TCP connection to nats-server");
    for table in ["udp", "udp6", "udplite", "udplite6", "raw", "raw6"] {
        let bound: Vec<_> = rows(pid, table)
            .into_iter()
            .filter(|r| sockets.contains(&r.inode))
            .collect();
        assert!(
            bound.is_empty(),
            "discovery has {table} sockets: {:?}",
            bound.iter().map(|r| &r.local).collect::<Vec<_>>()
        );
    }
    assert!(
        !listening_unix_socket(pid, &sockets),
        "discovery listens on a unix socket"
    );
    if let Ok(out) = Command::new("ss").args(["-ltunpH"]).output()
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        let mine: Vec<_> = text.lines().filter(|l| l.contains(&format!("pid={pid},"))).collect();
        assert!(mine.is_empty(), "ss shows discovery listening: {mine:?}");
    }

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = child.wait_exit(Duration::from_secs(15));
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", log_text(dir.path()));
    assert!(!health.exists(), "health file removed on shutdown");
}

#[test]
fn binary_fails_on_a_missing_config_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = Command::new(env!("CARGO_BIN_EXE_discovery"))
        .arg("--config-dir")
        .arg(dir.path().join("absent"))
        .args(["--nats-url", "nats://127.0.0.1:1", "--insecure-no-mtls"])
        .arg("--health-file")
        .arg(dir.path().join("healthy"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn discovery");
    let mut child = Guard(child);
    let exit = child.wait_exit(Duration::from_secs(15));
    assert!(!exit.success());
    let mut stderr = String::new();
    if let Some(mut pipe) = child.0.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("stderr");
    }
    assert!(stderr.contains("absent"), "error names the directory: {stderr}");
}

fn log_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("discovery.log")).unwrap_or_default()
}

/// Inodes of the sockets the process holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/<pid>/fd");
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

struct Row {
    local: String,
    remote: String,
    state: String,
    inode: u64,
}

/// Rows of /proc/<pid>/net/<table> (tcp, udp, ... : `sl local rem st ... uid timeout inode`).
fn rows(pid: u32, table: &str) -> Vec<Row> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Row {
                local: f.get(1)?.to_string(),
                remote: f.get(2)?.to_string(),
                state: f.get(3)?.to_string(),
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1092` → 4242.
fn port_of(address: &str) -> Option<u16> {
    u16::from_str_radix(address.rsplit(':').next()?, 16).ok()
}

/// /proc/<pid>/net/unix: `Num RefCount Protocol Flags Type St Inode Path`; flag 0x10000 is
/// __SO_ACCEPTCON (listening).
fn listening_unix_socket(pid: u32, sockets: &BTreeSet<u64>) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) else {
        return false;
    };
    text.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let flags = f.get(3).and_then(|x| u32::from_str_radix(x, 16).ok()).unwrap_or(0);
        let inode = f.get(6).and_then(|x| x.parse::<u64>().ok());
        inode.is_some_and(|i| sockets.contains(&i)) && flags & 0x10000 != 0
    })
}
