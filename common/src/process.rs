//! The one start-up of every process: an actix System on a multi-thread tokio runtime,
//! telemetry, mTLS from the flags, and a shutdown that SIGTERM or SIGINT triggers. Each
//! `main` parses its flags and hands its own work to [`run`].
use std::future::Future;

use crate::{
    config::CommonArgs,
    shutdown::{self, Shutdown},
    telemetry,
    tls::{TlsError, TlsMode},
};

/// What a process gets at start.
pub struct Started {
    /// Triggered by SIGTERM or SIGINT; the process drains, then `body` returns.
    pub shutdown: Shutdown,
    /// mTLS from `--tls-dir`, or plain text with `--insecure-no-mtls`.
    pub tls: TlsMode,
}

/// Runs `body` as process `service` and returns its result, logged if it is an error. The
/// OTLP exporter is flushed at the end, off the runtime's threads (its flush blocks).
pub fn run<F, Fut, E>(service: &'static str, common: &CommonArgs, body: F) -> Result<(), E>
where
    F: FnOnce(Started) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<TlsError> + From<std::io::Error> + std::fmt::Display,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let log_format = common.log_format;
    let tls = common.tls_dir.clone();
    let insecure = common.insecure_no_mtls;
    actix::System::with_tokio_rt(move || runtime).block_on(async move {
        let telemetry = telemetry::init(service, log_format);
        let result = async {
            let tls = TlsMode::from_flags(tls.as_deref(), insecure)?;
            let shutdown = Shutdown::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                shutdown::signal().await;
                tracing::info!("shutting down");
                on_signal.trigger();
            });
            body(Started { shutdown, tls }).await
        }
        .await;
        if let Err(error) = &result {
            tracing::error!(error = format!("{error:#}"), "{service} failed");
        }
        let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
        result
    })
}
