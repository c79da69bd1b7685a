//! The mTLS certificates of one running system, laid out as Kubernetes mounts a TLS Secret:
//! each folder holds `ca.crt`, `tls.crt` and `tls.key` as symlinks into `..data`, itself a
//! symlink to the current generation, so that a rotation is one atomic rename (what our
//! processes and Envoy watch for).
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, Result};
use kgw_proto::identity::{self, Identity};

use crate::kube::{pki::Ca, write_file};

/// Folder names under the PKI root.
pub const ADMIN: &str = "admin";
pub const PROXY: &str = "proxy";
pub const NATS: &str = "nats";

/// The CA and where each certificate lives.
pub struct SystemPki {
    root: PathBuf,
    ca: Ca,
    generation: AtomicU32,
}

impl SystemPki {
    /// A new CA and a certificate for each process (server names `<process>.kgw.internal`,
    /// `localhost` and `ip`), for the Envoy of `role`, for nats-server (`nats_ip`) and for
    /// the admin (tests and tools), under `root`.
    pub fn create(root: &Path, ips: &[IpAddr], role: &str, nats_ip: IpAddr) -> Result<Self> {
        let pki = Self {
            root: root.to_path_buf(),
            ca: Ca::generate()?,
            generation: AtomicU32::new(0),
        };
        for process in identity::PROCESSES {
            pki.issue(process, &Identity::Process(process.into()), &pki.sans(process, ips))?;
        }
        pki.issue(PROXY, &Identity::Proxy { role: role.into() }, &[])?;
        pki.issue(ADMIN, &Identity::Admin, &[])?;
        let mut nats_sans = vec![identity::NATS_SERVER_NAME.to_string(), "localhost".into()];
        nats_sans.push(nats_ip.to_string());
        pki.issue(NATS, &Identity::Admin, &nats_sans)?;
        Ok(pki)
    }

    fn sans(&self, process: &str, ips: &[IpAddr]) -> Vec<String> {
        let mut sans = vec![identity::server_name(process), "localhost".into(), "127.0.0.1".into()];
        sans.extend(ips.iter().map(ToString::to_string));
        sans.sort();
        sans.dedup();
        sans
    }

    /// The folder of `who` (a process name, [`PROXY`], [`ADMIN`] or [`NATS`]).
    pub fn dir(&self, who: &str) -> PathBuf {
        self.root.join(who)
    }

    /// A certificate of another identity in its own folder `who` (another Envoy's role,
    /// a certificate a test forges).
    pub fn issue(&self, who: &str, identity: &Identity, sans: &[String]) -> Result<PathBuf> {
        let pair = self.ca.leaf(&identity.common_name(), sans)?;
        let dir = self.dir(who);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let data = dir.join(format!("..gen-{generation}"));
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        write_file(&data.join("ca.crt"), self.ca.pem())?;
        write_file(&data.join("tls.crt"), &pair.cert_pem)?;
        write_file(&data.join("tls.key"), &pair.key_pem)?;
        // `..data` → this generation, swapped in one rename.
        let staged = dir.join("..data.tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(format!("..gen-{generation}"), &staged)?;
        std::fs::rename(&staged, dir.join("..data")).with_context(|| format!("swapping {}/..data", dir.display()))?;
        for file in ["ca.crt", "tls.crt", "tls.key"] {
            let link = dir.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{file}"), &link)?;
            }
        }
        Ok(dir)
    }

    /// Replaces `who`'s certificate by a new one of the same identity and names (a
    /// rotation). Returns the new certificate's PEM.
    pub fn rotate(&self, who: &str, identity: &Identity, sans: &[String]) -> Result<String> {
        let dir = self.issue(who, identity, sans)?;
        std::fs::read_to_string(dir.join("tls.crt")).context("reading the rotated certificate")
    }

    /// The server names a process's certificate carries (for [`Self::rotate`]).
    pub fn process_sans(&self, process: &str, ips: &[IpAddr]) -> Vec<String> {
        self.sans(process, ips)
    }

    /// The CA, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }
}
