//! [`LogWriter`]: the actix actor that owns the output (file or stdout) and the NATS
//! [`Publisher`]. One [`WriteBatch`] per gRPC message; the output is flushed after every
//! batch so lines are visible at once. File writes block, so the writer runs on a thread of
//! its own (a one-thread `SyncArbiter`), never on the async runtime's threads.
use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Stdout, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use bytes::Bytes;

use crate::{
    EntrySink, Error,
    line::{GatewayId, LogLine},
    otlp::OtlpLogs,
    publish::Publisher,
    stats::{self, Stats},
};

/// Where lines go.
pub enum Output {
    Stdout(BufWriter<Stdout>),
    File { path: PathBuf, file: BufWriter<File> },
}

impl Output {
    pub fn stdout() -> Self {
        Self::Stdout(BufWriter::new(io::stdout()))
    }

    /// Opens `path` for appending, creating it and its parent directories.
    pub fn file(path: &Path) -> Result<Self, Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::OpenOutput {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::File {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
        })
    }

    fn name(&self) -> String {
        match self {
            Self::Stdout(_) => "stdout".into(),
            Self::File { path, .. } => path.display().to_string(),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Stdout(w) => w,
            Self::File { file, .. } => file,
        }
    }
}

/// Writes one line per entry, publishes it, counts.
pub struct LogWriter {
    output: Output,
    publisher: Option<Publisher>,
    /// Each line also as an OTLP log record (`--otlp-logs-endpoint`).
    otlp: Option<Arc<OtlpLogs>>,
    stats: Arc<Stats>,
}

impl LogWriter {
    pub fn new(output: Output, publisher: Option<Publisher>, stats: Arc<Stats>) -> Self {
        Self {
            output,
            publisher,
            otlp: None,
            stats,
        }
    }

    /// Also exports every line as an OTLP log record.
    pub fn with_otlp(mut self, otlp: Option<Arc<OtlpLogs>>) -> Self {
        self.otlp = otlp;
        self
    }

    fn write_line(&mut self, line: &LogLine) -> Option<Vec<u8>> {
        let json = match serde_json::to_vec(line) {
            Ok(json) => json,
            Err(error) => {
                self.write_failed(&error);
                return None;
            }
        };
        let out = self.output.writer();
        match out.write_all(&json).and_then(|()| out.write_all(b"\n")) {
            Ok(()) => {
                stats::add(&self.stats.lines_written, 1);
            }
            Err(error) => self.write_failed(&error),
        }
        Some(json)
    }

    fn write_failed(&self, error: &dyn std::error::Error) {
        let total = stats::add(&self.stats.write_errors, 1);
        if total.is_power_of_two() {
            tracing::error!(output = %self.output.name(), %error, errors_total = total, "cannot write access-log line");
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.output.writer().flush();
        if let Err(error) = &result {
            self.write_failed(error);
        }
        result
    }
}

impl LogWriter {
    /// Starts the writer on its own thread.
    pub fn start_on_thread(self) -> Addr<Self> {
        // The factory runs once per thread (one here); a restarted actor (it never stops on
        // its own) reopens the same output.
        let path = match &self.output {
            Output::File { path, .. } => Some(path.clone()),
            Output::Stdout(_) => None,
        };
        let (publisher, otlp, stats) = (self.publisher.clone(), self.otlp.clone(), self.stats.clone());
        let first = std::sync::Mutex::new(Some(self));
        SyncArbiter::start(1, move || {
            if let Some(writer) = first.lock().ok().and_then(|mut w| w.take()) {
                return writer;
            }
            let output = match &path {
                Some(path) => Output::file(path).unwrap_or_else(|error| {
                    tracing::error!(%error, "cannot reopen the access-log file; writing to stdout");
                    Output::stdout()
                }),
                None => Output::stdout(),
            };
            LogWriter::new(output, publisher.clone(), stats.clone()).with_otlp(otlp.clone())
        })
    }
}

impl Actor for LogWriter {
    type Context = SyncContext<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        tracing::info!(output = %self.output.name(), nats = self.publisher.is_some(), "log writer started");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let _ = self.flush();
        tracing::info!(stats = ?self.stats.snapshot(), "log writer stopped");
    }
}

/// The lines of one gRPC message.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteBatch(pub Vec<LogLine>);

impl Handler<WriteBatch> for LogWriter {
    type Result = ();

    fn handle(&mut self, WriteBatch(batch): WriteBatch, _ctx: &mut Self::Context) {
        let mut subject: Option<(Arc<GatewayId>, String)> = None;
        for line in &batch {
            let Some(json) = self.write_line(line) else {
                continue;
            };
            if let Some(otlp) = &self.otlp {
                otlp.export(line, &json);
            }
            let Some(publisher) = &self.publisher else {
                continue;
            };
            let subject = match &subject {
                Some((gateway, s)) if *gateway == line.gateway => s.clone(),
                _ => {
                    let s = subject_of(&line.gateway);
                    subject = Some((line.gateway.clone(), s.clone()));
                    s
                }
            };
            publisher.publish(subject, line.id.clone(), Bytes::from(json));
        }
        let _ = self.flush();
        tracing::trace!(lines = batch.len(), "batch written");
    }
}

/// Flushes the output (on shutdown; batches flush themselves).
#[derive(Message)]
#[rtype(result = "io::Result<()>")]
pub struct Flush;

impl Handler<Flush> for LogWriter {
    type Result = io::Result<()>;

    fn handle(&mut self, _: Flush, _ctx: &mut Self::Context) -> io::Result<()> {
        self.flush()
    }
}

impl EntrySink for Addr<LogWriter> {
    async fn write(&self, batch: Vec<LogLine>) -> Result<(), Error> {
        self.send(WriteBatch(batch))
            .await
            .map_err(|source| Error::WriterGone { source })
    }
}

/// `kgw.accesslog.<ns>.<gateway>`; characters NATS forbids in a subject (whitespace, `*`,
/// `>`) become `_`. Dots in names stay (they add tokens; `kgw.accesslog.>` still matches).
pub(crate) fn subject_of(gateway: &GatewayId) -> String {
    let token = |s: &str| -> String {
        let t: String = s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '*' || c == '>' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        if t.is_empty() { "_".into() } else { t }
    };
    kgw_proto::nats::access_log_subject(&token(&gateway.namespace), &token(&gateway.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        let id = |ns: &str, n: &str| GatewayId {
            namespace: ns.into(),
            name: n.into(),
        };
        assert_eq!(subject_of(&id("default", "gw")), "kgw.accesslog.default.gw");
        assert_eq!(subject_of(&id("a b", "g*>")), "kgw.accesslog.a_b.g__");
    }
}
