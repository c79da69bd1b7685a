//! The broker's users for one running system: a password per process user (the
//! permissions `kgw_proto::nats::users` defines) and an `admin` for tests and tools, written
//! as nats-server configuration and as password files the processes read.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kgw_proto::nats::users;

use crate::kube::{random_token, write_file};

/// The user tests and tools connect as: everything allowed.
pub const ADMIN: &str = "admin";

/// Passwords, and where each process user's is written.
pub struct NatsUsers {
    admin_password: String,
    /// user → (password, password file).
    users: BTreeMap<&'static str, (String, PathBuf)>,
}

impl NatsUsers {
    /// Random passwords, their files under `dir` (mode 0600).
    pub fn create(dir: &Path) -> Result<Self> {
        let mut users = BTreeMap::new();
        for user in users::ALL {
            let password = random_token()?;
            let file = dir.join(format!("nats-{user}.password"));
            write_file(&file, &password)?;
            users.insert(user, (password, file));
        }
        Ok(Self {
            admin_password: random_token()?,
            users,
        })
    }

    /// `--nats-user U --nats-password-file F` for a process user.
    pub fn args(&self, user: &str) -> Vec<String> {
        match self.users.get(user) {
            Some((_, file)) => vec![
                "--nats-user".into(),
                user.into(),
                "--nats-password-file".into(),
                file.display().to_string(),
            ],
            None => Vec::new(),
        }
    }

    /// `nats://admin:<password>@host:port`.
    pub fn admin_url(&self, plain_url: &str) -> String {
        plain_url.replacen("nats://", &format!("nats://{ADMIN}:{}@", self.admin_password), 1)
    }

    /// (user, password) of a process user, for tests that act as one.
    pub fn credentials(&self, user: &str) -> Option<(String, String)> {
        self.users
            .get(user)
            .map(|(password, _)| (user.to_string(), password.clone()))
    }

    /// The authorization block of nats-server's configuration.
    fn authorization(&self) -> Result<serde_json::Value> {
        let mut list = vec![serde_json::json!({"user": ADMIN, "password": self.admin_password})];
        for (user, (password, _)) in &self.users {
            let permissions = users::permissions(user).with_context(|| format!("no permissions for {user}"))?;
            list.push(serde_json::json!({
                "user": user,
                "password": password,
                "permissions": {
                    "publish": {"allow": permissions.publish},
                    "subscribe": {"allow": permissions.subscribe},
                },
            }));
        }
        Ok(serde_json::json!({"users": list}))
    }
}

/// nats-server configuration (JSON, which its parser reads): the users' authorization, and
/// with `tls_dir` TLS on the client port with client certificates from its CA required.
pub fn server_config(users: Option<&NatsUsers>, tls_dir: Option<&Path>) -> Result<String> {
    let mut config = serde_json::Map::new();
    if let Some(users) = users {
        config.insert("authorization".into(), users.authorization()?);
    }
    if let Some(dir) = tls_dir {
        let file = |name: &str| dir.join(name).display().to_string();
        config.insert(
            "tls".into(),
            serde_json::json!({
                "cert_file": file("tls.crt"),
                "key_file": file("tls.key"),
                "ca_file": file("ca.crt"),
                "verify": true,
                "timeout": 2,
            }),
        );
    }
    Ok(serde_json::to_string_pretty(&serde_json::Value::Object(config))?)
}
