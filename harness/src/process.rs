//! One child process with its output in a log file: start, SIGTERM, SIGKILL, restart.
//! Only processes started here are ever signalled, by their own pid.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process};

/// A child process we started, and how to start it again.
#[derive(Debug)]
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    child: Option<Child>,
    /// Started under a wrapper (a profiler): signals go to the wrapper's children.
    wrapped: bool,
}

impl Process {
    /// Describes a process; nothing runs until [`Process::start`].
    /// Stdout and stderr are appended to `log`. `RUST_LOG=info` is set unless the
    /// environment already has a `RUST_LOG`.
    pub fn new(
        name: &str,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
        log: impl Into<PathBuf>,
    ) -> Self {
        let mut env = Vec::new();
        if std::env::var_os("RUST_LOG").is_none() {
            env.push(("RUST_LOG".into(), "info".into()));
        }
        Process {
            name: name.into(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env,
            log: log.into(),
            child: None,
            wrapped: false,
        }
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    pub fn command_line(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Starts the process (again). An error if it is still running.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            anyhow::bail!("{} is already running (pid {:?})", self.name, self.pid());
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let wrapper = wrapper_for(&self.name);
        match &wrapper {
            Some(w) => writeln!(
                log,
                "=== kgw-harness: starting {} under {}",
                self.command_line(),
                w.join(" ")
            )?,
            None => writeln!(log, "=== kgw-harness: starting {}", self.command_line())?,
        }
        let err: File = log.try_clone()?;
        let mut command = match &wrapper {
            Some(w) => {
                let mut c = Command::new(&w[0]);
                c.args(&w[1..]).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", self.command_line()))?;
        self.child = Some(child);
        self.wrapped = wrapper.is_some();
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Still running (not exited, not reaped).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none() && self.child.is_some()
    }

    /// The exit status, once it has exited (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM, if it is running (under a wrapper: to the wrapper's children, the
    /// program itself, so it drains and the wrapper writes its report).
    pub fn terminate(&mut self) {
        if !self.is_running() {
            return;
        }
        let Some(pid) = self.pid() else { return };
        let targets = if self.wrapped { children_of(pid) } else { vec![pid] };
        for target in targets {
            if let Some(pid) = Pid::from_raw(target as i32) {
                let _ = kill_process(pid, Signal::TERM);
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                child.kill().with_context(|| format!("killing {}", self.name))?;
            }
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL (blocking).
    pub fn stop_blocking(&mut self, grace: Duration) -> Result<()> {
        self.terminate();
        let deadline = Instant::now() + self.grace(grace);
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Result<()> {
        self.terminate();
        let deadline = Instant::now() + self.grace(grace);
        while self.is_running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill9()
    }

    /// A wrapper (a profiler) writes its report after the program exits: give it time.
    fn grace(&self, grace: Duration) -> Duration {
        if self.wrapped {
            grace.max(Duration::from_secs(60))
        } else {
            grace
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop_blocking(Duration::from_secs(3));
    }
}

/// The command a process named `name` runs under, if any: `KGW_HARNESS_WRAP_<NAME>` (the
/// name in capitals, `-` as `_`), split at spaces. For profiling, e.g.
/// `KGW_HARNESS_WRAP_GATEWAY="heaptrack -o /tmp/profiles/gateway"`.
fn wrapper_for(name: &str) -> Option<Vec<String>> {
    let var = format!(
        "KGW_HARNESS_WRAP_{}",
        name.to_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let words: Vec<String> = std::env::var(var).ok()?.split_whitespace().map(String::from).collect();
    (!words.is_empty()).then_some(words)
}

/// The direct children of `pid` (from /proc; empty when they cannot be read).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The last `lines` lines of a file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
