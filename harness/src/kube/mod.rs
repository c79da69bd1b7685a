//! A real Kubernetes API server for tests: etcd and kube-apiserver on a loopback block of
//! their own, no kubelet, controller-manager or scheduler. Authentication by a static admin
//! token (group `system:masters`), client certificates signed by the cluster CA, and
//! ServiceAccount tokens (TokenRequest); authorization by RBAC; the default admission
//! plugins, webhooks included. Everything stops when the [`KubeCluster`] is dropped.
//!
//! Without a controller-manager nothing creates ServiceAccounts, their tokens or
//! namespaces' contents: tests create what they need. `default` and `kube-system` exist.

pub mod apply;
mod kubeconfig;
pub(crate) mod pki;
pub(crate) mod tools;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use tempfile::TempDir;

use crate::addr::{self, Lease};
use crate::process::Process;

pub use kubeconfig::client_from_kubeconfig;
pub use pki::CertPair;
pub use tools::{KubeTools, tools};

const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
const APISERVER_PORT: u16 = 6443;
/// The Service ClusterIP range; its first address is the `kubernetes` Service's.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";
/// `iss` of ServiceAccount tokens, and their default audience.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const ADMIN_USER: &str = "kgw-admin";
/// A cold kube-apiserver on two busy cores needs well under this.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Lets the API server finish in-flight requests before a restart.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// etcd and kube-apiserver, running until dropped.
pub struct KubeCluster {
    // Fields drop in order: the API server stops before etcd, the files go last.
    apiserver: Process,
    etcd: Process,
    client: kube::Client,
    tools: KubeTools,
    ca: pki::Ca,
    host: Ipv4Addr,
    admin_token: String,
    kubeconfig: PathBuf,
    files: TempDir,
    _lease: Lease,
}

impl KubeCluster {
    /// Builds the binaries if missing, starts etcd and kube-apiserver, waits for `/readyz`
    /// and writes the admin kubeconfig.
    pub async fn start() -> Result<KubeCluster> {
        let tools = tokio::task::spawn_blocking(tools).await??;
        let (lease, host) = reserve_host()?;
        let files = tempfile::Builder::new()
            .prefix("kgw-kube-")
            .tempdir()
            .context("creating the cluster's temporary directory")?;
        let dir = files.path();
        let ca = pki::Ca::generate()?;
        let admin_token = random_token()?;
        write_pki(dir, &ca, host)?;
        write_file(
            &dir.join("tokens.csv"),
            &format!("{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n"),
        )?;

        let mut etcd = etcd_process(&tools, dir, host);
        etcd.start()?;
        wait_for_port(&mut etcd, SocketAddr::new(IpAddr::V4(host), ETCD_CLIENT_PORT)).await?;
        let mut apiserver = apiserver_process(&tools, dir, host);
        apiserver.start()?;

        let kubeconfig = kubeconfig::path_in(dir, "admin");
        kubeconfig::write(
            &kubeconfig,
            &server_url(host),
            &dir.join("ca.crt"),
            ADMIN_USER,
            kubeconfig::Credentials::Token(&admin_token),
        )?;
        let client = client_from_kubeconfig(&kubeconfig).await?;
        wait_ready(&client, &mut apiserver).await?;
        Ok(KubeCluster {
            apiserver,
            etcd,
            client,
            tools,
            ca,
            host,
            admin_token,
            kubeconfig,
            files,
            _lease: lease,
        })
    }

    /// The admin kubeconfig (static token, group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client with the admin's rights.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// `https://127.B.C.1:6443`.
    pub fn server_url(&self) -> String {
        server_url(self.host)
    }

    /// The cluster CA (PEM): it signed the API server's certificate, the client
    /// certificates and [`KubeCluster::serving_cert`]s, and authenticates client certificates.
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    /// The admin's static bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The binaries this cluster runs (kubectl and helm included).
    pub fn tools(&self) -> &KubeTools {
        &self.tools
    }

    /// A temporary directory removed with the cluster (kubeconfigs, certificates, logs).
    pub fn dir(&self) -> &Path {
        self.files.path()
    }

    /// A token for an existing ServiceAccount, from the TokenRequest API (an hour long).
    pub async fn token_for_service_account(&self, namespace: &str, name: &str) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?;
        response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| anyhow!("TokenRequest for {namespace}/{name} returned no token"))
    }

    /// Writes a kubeconfig that authenticates with `token` (a ServiceAccount's, say).
    pub fn write_kubeconfig_with_token(&self, token: &str) -> Result<PathBuf> {
        let path = kubeconfig::path_in(self.dir(), &unique("token"));
        kubeconfig::write(
            &path,
            &self.server_url(),
            &self.dir().join("ca.crt"),
            "token-user",
            kubeconfig::Credentials::Token(token),
        )?;
        Ok(path)
    }

    /// Writes a kubeconfig for `user` (in `group`, if any) with a client certificate signed
    /// by the cluster CA. The user has no rights until RBAC grants some.
    pub fn write_kubeconfig_for_user(&self, user: &str, group: Option<&str>) -> Result<PathBuf> {
        let stem = unique("user");
        let pair = self.ca.client(user, group)?;
        let cert = self.dir().join(format!("{stem}.crt"));
        let key = self.dir().join(format!("{stem}.key"));
        write_file(&cert, &pair.cert_pem)?;
        write_file(&key, &pair.key_pem)?;
        let path = kubeconfig::path_in(self.dir(), &stem);
        kubeconfig::write(
            &path,
            &self.server_url(),
            &self.dir().join("ca.crt"),
            user,
            kubeconfig::Credentials::ClientCert { cert: &cert, key: &key },
        )?;
        Ok(path)
    }

    /// A client that authenticates with `token`.
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client> {
        client_from_kubeconfig(self.write_kubeconfig_with_token(token)?).await
    }

    /// A serving certificate signed by the cluster CA, for a webhook the API server calls
    /// (`caBundle` = [`KubeCluster::ca_pem`]); `sans` are IP addresses or DNS names.
    pub fn serving_cert(&self, sans: &[&str]) -> Result<CertPair> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        self.ca.serving("kgw-test-webhook", &sans)
    }

    /// `kubectl` with the admin kubeconfig; add arguments and run it.
    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.tools.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Runs `kubectl <args>` (as admin) with `stdin` as its input; its output, whatever
    /// its exit status.
    pub fn kubectl_with_input(&self, args: &[&str], stdin: &str) -> Result<std::process::Output> {
        use std::io::Write as _;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(stdin.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after a grace period) and starts it
    /// again on the same etcd, address and keys; returns once it is ready. Watches break
    /// and clients relist, as after a real API server restart.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.stop(STOP_GRACE).await?;
        self.apiserver.start()?;
        wait_ready(&self.client, &mut self.apiserver).await
    }

    /// The last `lines` lines of kube-apiserver's log.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        self.apiserver.log_tail(lines)
    }

    /// The last `lines` lines of etcd's log.
    pub fn etcd_log_tail(&self, lines: usize) -> String {
        self.etcd.log_tail(lines)
    }
}

fn server_url(host: Ipv4Addr) -> String {
    format!("https://{host}:{APISERVER_PORT}")
}

/// Host `.1` of a loopback block of our own (the harness's block locks keep concurrent
/// systems and clusters apart), with the cluster's ports free.
fn reserve_host() -> Result<(Lease, Ipv4Addr)> {
    // Busy blocks stay held until we are done, so the next allocation skips them.
    let mut busy = Vec::new();
    for _ in 0..32 {
        let lease = addr::allocate()?;
        let Some((b, c)) = lease.layout.block else {
            bail!("addr::allocate returned a layout without a block");
        };
        let host = Ipv4Addr::new(127, b, c, 1);
        let free = [ETCD_CLIENT_PORT, ETCD_PEER_PORT, APISERVER_PORT]
            .into_iter()
            .all(|port| TcpListener::bind((host, port)).is_ok());
        if free {
            return Ok((lease, host));
        }
        busy.push(lease);
    }
    bail!("no loopback block with ports {ETCD_CLIENT_PORT}, {ETCD_PEER_PORT} and {APISERVER_PORT} free")
}

/// The CA, the API server's serving certificate and the ServiceAccount key pair.
fn write_pki(dir: &Path, ca: &pki::Ca, host: Ipv4Addr) -> Result<()> {
    let sans: Vec<String> = [
        host.to_string(),
        // The `kubernetes` Service's ClusterIP, first of SERVICE_CLUSTER_IP_RANGE.
        "10.0.0.1".into(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ]
    .into();
    let serving = ca.serving("kube-apiserver", &sans)?;
    let (sa_key, sa_pub) = pki::service_account_key()?;
    write_file(&dir.join("ca.crt"), ca.pem())?;
    write_file(&dir.join("apiserver.crt"), &serving.cert_pem)?;
    write_file(&dir.join("apiserver.key"), &serving.key_pem)?;
    write_file(&dir.join("sa.key"), &sa_key)?;
    write_file(&dir.join("sa.pub"), &sa_pub)
}

fn etcd_process(tools: &KubeTools, dir: &Path, host: Ipv4Addr) -> Process {
    let client = format!("http://{host}:{ETCD_CLIENT_PORT}");
    let peer = format!("http://{host}:{ETCD_PEER_PORT}");
    let args: Vec<String> = vec![
        "--name=kgw-test".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        // Set even for one member: the defaults (localhost:2380) would clash across clusters.
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=kgw-test={peer}"),
        // Test data: speed over durability.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ];
    Process::new("etcd", &tools.etcd, args, dir.join("etcd.log"))
}

fn apiserver_process(tools: &KubeTools, dir: &Path, host: Ipv4Addr) -> Process {
    let file = |name: &str| dir.join(name).display().to_string();
    let args: Vec<String> = vec![
        format!("--etcd-servers=http://{host}:{ETCD_CLIENT_PORT}"),
        format!("--bind-address={host}"),
        format!("--advertise-address={host}"),
        format!("--secure-port={APISERVER_PORT}"),
        format!("--cert-dir={}", file("certs")),
        format!("--tls-cert-file={}", file("apiserver.crt")),
        format!("--tls-private-key-file={}", file("apiserver.key")),
        format!("--client-ca-file={}", file("ca.crt")),
        format!("--token-auth-file={}", file("tokens.csv")),
        "--authorization-mode=RBAC".into(),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!("--service-account-key-file={}", file("sa.pub")),
        format!("--service-account-signing-key-file={}", file("sa.key")),
        format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
        // Endpoints may not hold loopback addresses: do not publish ours for `kubernetes`.
        "--endpoint-reconciler-type=none".into(),
        "--profiling=false".into(),
    ];
    Process::new(
        "kube-apiserver",
        &tools.kube_apiserver,
        args,
        dir.join("kube-apiserver.log"),
    )
}

/// Waits until `addr` accepts connections, failing early if `process` exits.
async fn wait_for_port(process: &mut Process, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        check_alive(process)?;
        if Instant::now() > deadline {
            bail!(
                "{} not listening on {addr} after {READY_TIMEOUT:?}:\n{}",
                process.name(),
                process.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `GET /readyz` answers `ok`, failing early if the API server exits.
async fn wait_ready(client: &kube::Client, apiserver: &mut Process) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let request = hyper::Request::get("/readyz").body(Vec::new())?;
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        check_alive(apiserver)?;
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver not ready after {READY_TIMEOUT:?} (last answer: {last}):\n{}",
                apiserver.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn check_alive(process: &mut Process) -> Result<()> {
    match process.exit_status() {
        Some(status) => bail!("{} exited ({status}):\n{}", process.name(), process.log_tail(30)),
        None => Ok(()),
    }
}

/// A 32-hex-digit secret (bearer token, password) from the kernel's random source.
pub(crate) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut bytes,
    )
    .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `<prefix>-<n>`, distinct within this process.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Writes a file readable by its owner only (keys, tokens and passwords among them).
pub(crate) fn write_file(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
