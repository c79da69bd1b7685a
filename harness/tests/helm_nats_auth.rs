//! The chart's NATS authorization, rendered by the real `helm` and loaded by a real
//! nats-server with the chart's TLS flags and generated certificates: anonymous clients
//! are refused (with or without a certificate), each process's user (with the password the
//! chart generated into Secret nats-users, over TLS with the chart's certificate of that
//! process) can do its job and not another's.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use k8s_openapi::api::core::v1::Secret;
use kgw_harness::process::Process;
use kgw_proto::nats::{PROXIES_BUCKET, users};
use serde::Deserialize as _;

/// The chart rendered offline: its Secrets, and the nats-server arguments of StatefulSet
/// nats.
fn rendered_secrets(dir: &Path) -> Result<(Vec<Secret>, Vec<String>)> {
    let tools = kgw_harness::kube::tools()?;
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/kgw");
    let out = Command::new(&tools.helm)
        .args(["template", "kgw"])
        .arg(&chart)
        .args(["--namespace", "kgw-system", "--kube-version", "1.33.0"])
        .env("HELM_CACHE_HOME", dir.join("cache"))
        .env("HELM_CONFIG_HOME", dir.join("config"))
        .env("HELM_DATA_HOME", dir.join("data"))
        .output()?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut secrets = Vec::new();
    let mut nats_args = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&String::from_utf8(out.stdout)?) {
        let value = serde_yaml::Value::deserialize(doc)?;
        let kind = value.get("kind").and_then(|k| k.as_str());
        if kind == Some("Secret") {
            secrets.push(serde_yaml::from_value(value)?);
        } else if kind == Some("StatefulSet") && value["metadata"]["name"].as_str() == Some("nats") {
            nats_args = serde_yaml::from_value(value["spec"]["template"]["spec"]["containers"][0]["args"].clone())?;
        }
    }
    Ok((secrets, nats_args))
}

/// A rendered TLS Secret written as its pod mounts it.
fn write_tls_secret(secrets: &[Secret], name: &str, dir: &Path) -> Result<std::path::PathBuf> {
    let data = secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .and_then(|s| s.data.clone())
        .with_context(|| format!("Secret {name}"))?;
    std::fs::create_dir_all(dir)?;
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::write(
            dir.join(file),
            &data.get(file).with_context(|| format!("{name} lacks {file}"))?.0,
        )?;
    }
    Ok(dir.to_path_buf())
}

/// Checks the server's chain against the CA as for `name` (the in-cluster address the
/// processes dial, which the chart's certificate names), whatever address the test dials.
#[derive(Debug)]
struct AsIfDialled {
    inner: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for AsIfDialled {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS trusting the chart's CA (`ca.crt` in `dir`), verifying nats-server as
/// `nats.kgw-system.svc.cluster.local`, as one of our processes with the chart's
/// certificate in `dir` (`with_cert`) or without a client certificate.
fn client_tls(dir: &Path, with_cert: bool) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.crt"))? {
        roots.add(cert?)?;
    }
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone()).build()?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AsIfDialled {
            inner,
            name: rustls::pki_types::ServerName::try_from("nats.kgw-system.svc.cluster.local")?,
        }));
    if !with_cert {
        return Ok(builder.with_no_client_auth());
    }
    let chain = CertificateDer::pem_file_iter(dir.join("tls.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))?;
    Ok(builder.with_client_auth_cert(chain, key)?)
}

async fn connect(
    url: &str,
    tls: rustls::ClientConfig,
    user: &str,
    password: &str,
) -> Result<(async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>)> {
    let (errors_tx, errors) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(tls)
        .user_and_password(user.into(), password.into())
        .custom_inbox_prefix(users::inbox_prefix(user))
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = errors_tx.send(error.to_string());
                }
            }
        })
        .connect(url)
        .await?;
    Ok((client, errors))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_nats_users_work_on_a_real_nats_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (secrets, nats_args) = rendered_secrets(dir.path())?;
    let named = |name: &str| secrets.iter().find(|s| s.metadata.name.as_deref() == Some(name));
    let conf = named("nats-config")
        .and_then(|s| s.string_data.as_ref())
        .and_then(|d| d.get("nats.conf"))
        .context("Secret nats-config with nats.conf")?;
    let passwords = named("nats-users")
        .and_then(|s| s.data.clone())
        .context("Secret nats-users")?;
    let password =
        |user: &str| -> Result<String> { Ok(String::from_utf8(passwords.get(user).context("a password")?.0.clone())?) };
    let conf_path = dir.path().join("nats.conf");
    std::fs::write(&conf_path, conf)?;

    // The chart's TLS flags, with the chart's server certificate where the pod mounts it.
    let nats_tls = write_tls_secret(&secrets, "kgw-nats-tls", &dir.path().join("nats-tls"))?;
    let tls_args: Vec<String> = nats_args
        .iter()
        .filter(|a| a.starts_with("--tls"))
        .map(|a| a.replace("/etc/nats-tls", &nats_tls.display().to_string()))
        .collect();
    ensure!(
        tls_args.iter().any(|a| a == "--tlsverify") && tls_args.len() == 4,
        "the chart's nats-server does not require client certificates: {nats_args:?}"
    );
    let pki = dir.path().join("pki");
    let tls_of = |who: &str| -> Result<rustls::ClientConfig> {
        client_tls(
            &write_tls_secret(&secrets, &format!("kgw-{who}-tls"), &pki.join(who))?,
            true,
        )
    };
    let lease = kgw_harness::addr::allocate()?;
    let addr = lease.layout.nats_addr();
    let mut server = Process::new(
        "nats",
        kgw_harness::ensure_nats_server()?,
        [
            "-c".to_string(),
            conf_path.display().to_string(),
            "-a".into(),
            addr.ip().to_string(),
            "-p".into(),
            addr.port().to_string(),
            "-js".into(),
            "-sd".into(),
            dir.path().join("store").display().to_string(),
        ]
        .into_iter()
        .chain(tls_args),
        dir.path().join("nats.log"),
    );
    server.start()?;
    let url = format!("nats://{addr}");
    kgw_harness::wait_for(Duration::from_secs(10), || async {
        ensure!(std::net::TcpStream::connect(addr).is_ok(), "nats-server not up yet");
        Ok(())
    })
    .await?;

    ensure!(
        async_nats::connect(&url).await.is_err(),
        "an anonymous plain-text client was let in"
    );
    let anonymous = async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(tls_of("admin")?)
        .connect(&url)
        .await;
    ensure!(
        anonymous.is_err(),
        "an anonymous client (with a certificate) was let in"
    );
    // A NATS user over TLS but without a client certificate: refused.
    let no_cert = async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(client_tls(&nats_tls, false)?)
        .user_and_password(users::GATEWAY.into(), password(users::GATEWAY)?)
        .connect(&url)
        .await;
    ensure!(no_cert.is_err(), "a client without a certificate was let in");
    let (gateway, _) = connect(&url, tls_of("gateway")?, users::GATEWAY, &password(users::GATEWAY)?).await?;
    let proxies = async_nats::jetstream::new(gateway)
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: PROXIES_BUCKET.into(),
            history: 1,
            ..Default::default()
        })
        .await?;
    proxies.put("default.gw", Bytes::from_static(b"proxy")).await?;

    let (controller, mut errors) = connect(
        &url,
        tls_of("controller")?,
        users::CONTROLLER,
        &password(users::CONTROLLER)?,
    )
    .await?;
    let read = async_nats::jetstream::new(controller)
        .get_key_value(PROXIES_BUCKET)
        .await?;
    ensure!(read.get("default.gw").await?.as_deref() == Some(&b"proxy"[..]));
    let _ = tokio::time::timeout(Duration::from_secs(2), read.put("default.gw", Bytes::from_static(b"x"))).await;
    let denied = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(error) = errors.recv().await {
            if error.to_lowercase().contains("permissions violation") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    ensure!(denied, "the controller's write was not refused");
    ensure!(proxies.get("default.gw").await?.as_deref() == Some(&b"proxy"[..]));
    Ok(())
}
