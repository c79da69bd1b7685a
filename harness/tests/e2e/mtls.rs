//! mTLS between the pods: clients without a certificate from the system's CA are refused on
//! every port of ours and on NATS; a certificate names what it may do (an Envoy reads only
//! its role; the proxy debug server is for admins); certificates rotate without a restart.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result, bail};
use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DiscoveryRequest, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::protobuf::{Struct, Value, value::Kind},
};
use kgw_common::tls::{Mtls, TlsMode, client::grpc_channel};
use kgw_harness::{Component, System, wait_for, wait_status, write_manifest_atomically};
use kgw_proto::{
    identity::{self, Identity},
    v1::{ListProxiesRequest, proxy_debug_service_client::ProxyDebugServiceClient},
};
use tokio_rustls::rustls;

use crate::support::{WAIT, config_dir, route_yaml, start};

const LISTENERS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// Client certificates of `identity`, issued by the system's CA into their own folder.
fn as_identity(system: &System, folder: &str, identity: Identity) -> Result<TlsMode> {
    let pki = system.pki().context("the system runs mTLS")?;
    let dir = pki.issue(folder, &identity, &[])?;
    Ok(TlsMode::Mtls(Mtls::load(dir)?))
}

fn node(role: &str) -> Node {
    let mut metadata = Struct::default();
    metadata.fields.insert(
        "role".into(),
        Value {
            kind: Some(Kind::StringValue(role.into())),
        },
    );
    Node {
        id: "mtls-test".into(),
        metadata: Some(metadata),
        ..Default::default()
    }
}

/// Opens an ADS stream for `role` and returns the first answer: Ok(listener count) or the
/// gRPC status.
async fn ads_first_answer(
    addr: SocketAddr,
    tls: &TlsMode,
    role: &str,
) -> Result<std::result::Result<usize, tonic::Status>> {
    let channel = grpc_channel(&addr.to_string(), tls, "controller", |e| e)?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let request = DiscoveryRequest {
        node: Some(node(role)),
        type_url: LISTENERS.into(),
        ..Default::default()
    };
    let outbound = tokio_stream::iter(vec![request]).chain(tokio_stream::pending());
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut inbound = client.stream_aggregated_resources(outbound).await?.into_inner();
        match inbound.message().await? {
            Some(response) => Ok(response.resources.len()),
            None => Err(tonic::Status::unknown("stream ended without an answer")),
        }
    })
    .await
    .context("no ADS answer in 10 s")?;
    Ok(answer)
}

/// A TLS handshake with `config` to `addr`: the server's certificate, or the error.
async fn handshake(addr: SocketAddr, config: Arc<rustls::ClientConfig>, server: &str) -> Result<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(identity::server_name(server))?;
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    // TLS 1.3: the server checks the client's certificate after our side finished; a
    // refusal arrives as an alert on the first read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await;
    if let Ok(Err(error)) = read
        && error.to_string().contains("alert")
    {
        bail!("refused after the handshake: {error}");
    }
    let certs = tls.get_ref().1.peer_certificates().context("no server certificate")?;
    Ok(certs[0].to_vec())
}

/// A client config that trusts the system's CA but has no certificate of its own.
fn no_client_certificate(system: &System) -> Result<Arc<rustls::ClientConfig>> {
    let pki = system.pki().context("mTLS")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

use rustls::pki_types::pem::PemObject as _;
use tokio_stream::StreamExt as _;

#[tokio::test(flavor = "multi_thread")]
async fn clients_without_a_certificate_are_refused_on_every_port_and_nats() -> Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    let l = system.layout().clone();
    let anonymous = no_client_certificate(system)?;
    let admin = system.admin_tls()?;
    let admin_config = admin.mtls().context("admin")?.client_config();
    let ports = [
        ("xDS", l.xds_addr(), "controller"),
        ("REST xDS", l.rest_xds_addr(), "controller"),
        ("validation", l.validation_addr(), "controller"),
        ("proxy debug", l.debug_addr(), "controller"),
        ("WASM cache", l.wasm_cache_addr(), "controller"),
        ("access log", l.access_log_addr(), "access-log"),
    ];
    for (name, addr, server) in ports {
        let refused = handshake(addr, anonymous.clone(), server).await;
        assert!(
            refused.is_err(),
            "{name} ({addr}) accepted a client without a certificate"
        );
        let plain = grpc_channel(&addr.to_string(), &TlsMode::Insecure, server, |e| e)?;
        let debug = ProxyDebugServiceClient::new(plain)
            .list_proxies(ListProxiesRequest::default())
            .await;
        assert!(debug.is_err(), "{name} ({addr}) answered plain text");
        handshake(addr, admin_config.clone(), server)
            .await
            .with_context(|| format!("{name} ({addr}) refused the admin certificate"))?;
    }
    // NATS: TLS without a client certificate is refused, as is plain text.
    let url = system.layout().nats_url();
    let no_cert = async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(rustls::ClientConfig::clone(&anonymous))
        .connect(url.as_str())
        .await;
    assert!(no_cert.is_err(), "NATS accepted TLS without a client certificate");
    assert!(
        async_nats::connect(url.as_str()).await.is_err(),
        "NATS accepted plain text"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_names_what_it_may_read() -> Result<()> {
    let running = start(&["echo"]).await?;
    let system = &running.system;
    write_manifest_atomically(
        config_dir(system),
        "route.yaml",
        &route_yaml("echo", "/echo", &[("echo", 1)]),
    )?;
    wait_status(&system.url("/echo"), None, 200, WAIT).await?;
    let l = system.layout().clone();

    // An Envoy of another gateway cannot read this one's config over ADS (REST xDS: the
    // rest_xds unit test).
    let other = as_identity(
        system,
        "other-proxy",
        Identity::Proxy {
            role: "other~gw".into(),
        },
    )?;
    let denied = ads_first_answer(l.xds_addr(), &other, "default~gw").await?;
    assert_eq!(denied.map_err(|s| s.code()), Err(tonic::Code::PermissionDenied));
    let own = as_identity(
        system,
        "own-proxy",
        Identity::Proxy {
            role: "default~gw".into(),
        },
    )?;
    let listeners = ads_first_answer(l.xds_addr(), &own, "default~gw").await?;
    assert!(matches!(listeners, Ok(n) if n > 0), "{listeners:?}");

    // The proxy debug server (every Proxy) is for admins, not for a process or an Envoy.
    let gateway = as_identity(system, "as-gateway", Identity::Process("gateway".into()))?;
    for (who, tls) in [("gateway", &gateway), ("Envoy", &own)] {
        let channel = grpc_channel(&l.debug_addr().to_string(), tls, "controller", |e| e)?;
        let answer = ProxyDebugServiceClient::new(channel)
            .list_proxies(ListProxiesRequest::default())
            .await;
        assert_eq!(
            answer.err().map(|s| s.code()),
            Some(tonic::Code::PermissionDenied),
            "{who}"
        );
    }
    let channel = grpc_channel(&l.debug_addr().to_string(), &system.admin_tls()?, "controller", |e| e)?;
    let proxies = ProxyDebugServiceClient::new(channel)
        .list_proxies(ListProxiesRequest::default())
        .await?;
    assert_eq!(proxies.into_inner().proxies.len(), 1);
    Ok(())
}

/// The `serial_number`s in Envoy's `/certs`.
async fn envoy_serials(system: &System) -> Result<Vec<String>> {
    let certs = kgw_harness::get(&system.admin_url("/certs"), None).await?.json()?;
    let mut serials = Vec::new();
    for entry in certs["certificates"].as_array().into_iter().flatten() {
        for cert in entry["cert_chain"].as_array().into_iter().flatten() {
            serials.push(cert["serial_number"].as_str().unwrap_or_default().to_string());
        }
    }
    serials.sort();
    Ok(serials)
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_rotate_without_a_restart() -> Result<()> {
    let mut running = start(&["echo"]).await?;
    let dir = config_dir(&running.system).to_path_buf();
    write_manifest_atomically(&dir, "route.yaml", &route_yaml("echo", "/echo", &[("echo", 1)]))?;
    wait_status(&running.system.url("/echo"), None, 200, WAIT).await?;
    let system = &running.system;
    let l = system.layout().clone();
    let pki = system.pki().context("mTLS")?;
    let admin = system.admin_tls()?.mtls().context("admin")?.client_config();

    // The controller's serving certificate: a new handshake sees the new one within seconds.
    let controller_pid = system.pid(Component::Controller);
    let before = handshake(l.xds_addr(), admin.clone(), "controller").await?;
    pki.rotate(
        "controller",
        &Identity::Process("controller".into()),
        &pki.process_sans("controller", &l.all_ips()),
    )?;
    let after = wait_for(Duration::from_secs(10), || {
        let (admin, before, xds) = (admin.clone(), before.clone(), l.xds_addr());
        async move {
            let now = handshake(xds, admin, "controller").await?;
            anyhow::ensure!(now != before, "still the old certificate");
            Ok(now)
        }
    })
    .await?;
    assert_ne!(before, after);
    assert_eq!(
        system.pid(Component::Controller),
        controller_pid,
        "the controller restarted"
    );

    // Envoy's client certificate: SDS picks up the new files.
    let serials = envoy_serials(system).await?;
    pki.rotate(
        "proxy",
        &Identity::Proxy {
            role: "default~gw".into(),
        },
        &[],
    )?;
    let rotated = wait_for(Duration::from_secs(15), || {
        let serials = serials.clone();
        async move {
            let now = envoy_serials(system).await?;
            anyhow::ensure!(now != serials && !now.is_empty(), "Envoy still has {now:?}");
            Ok(now)
        }
    })
    .await?;
    println!("Envoy certificates: {serials:?} → {rotated:?}");

    // Envoy reconnects to a restarted controller with the new certificate, and new
    // config reaches it.
    running.system.kill9(Component::Controller)?;
    running.system.restart(Component::Controller).await?;
    write_manifest_atomically(&dir, "route.yaml", &route_yaml("echo", "/rotated", &[("echo", 1)]))?;
    wait_status(&running.system.url("/rotated"), None, 200, WAIT).await?;
    Ok(())
}
