//! What `kgw-up` and `kgw-kube-up` print about reaching a running system's ports: with
//! mTLS (the default) where the certificates are and the commands that present the
//! admin's.
use crate::System;
use crate::system::mtls;

/// `(label, text)` lines: the mTLS state, the admin's certificate, and a `gateway status`,
/// `controller proxies` and REST xDS command for this system (`role`: an Envoy's role,
/// `<namespace>~<gateway>`, for the REST xDS example).
pub fn client_commands(sys: &System, role: &str) -> Vec<(&'static str, String)> {
    let l = sys.layout();
    let tls = sys.admin_cli_args().join(" ");
    let mut lines = Vec::new();
    match sys.pki() {
        Some(pki) => {
            let admin = pki.dir(mtls::ADMIN);
            lines.push((
                "mTLS",
                format!(
                    "on: CA and certificates under {}; xDS, REST xDS, validation, WASM cache, proxy debug, \
                     access log and NATS take only clients with a certificate from that CA",
                    pki.dir("").display()
                ),
            ));
            lines.push((
                "admin cert",
                format!(
                    "{} (ca.crt, tls.crt, tls.key; common name kgw-admin): pass --tls-dir to our CLIs",
                    admin.display()
                ),
            ));
            let file = |name: &str| admin.join(name).display().to_string();
            lines.push((
                "REST xDS",
                format!(
                    "curl --cacert {} --cert {} --key {} https://{}/v3/discovery:listeners -d '{{\"node\":{{\"metadata\":{{\"role\":\"{role}\"}}}}}}'",
                    file("ca.crt"),
                    file("tls.crt"),
                    file("tls.key"),
                    l.rest_xds_addr()
                ),
            ));
        }
        None => lines.push((
            "mTLS",
            "OFF (--insecure-no-mtls): every port is plain text and unauthenticated".to_string(),
        )),
    }
    // NATS authenticates (one user per process): the status command connects as admin.
    lines.push((
        "status",
        format!("target/debug/gateway status --nats-url {} {tls}", sys.nats_url()),
    ));
    lines.push((
        "proxies",
        format!("target/debug/controller proxies --debug-addr {} {tls}", l.debug_addr()),
    ));
    lines
}
