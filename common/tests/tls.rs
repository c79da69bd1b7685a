//! mTLS material: loaded from a folder, reloaded when the files change, and a broken
//! rotation keeps the previous certificates.
use std::{path::Path, time::Duration};

use kgw_common::tls::{Mtls, TlsError};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "test ca");
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// Writes ca.crt, tls.crt and tls.key for `common_name` into `dir`.
fn write_leaf(ca: &Ca, dir: &Path, common_name: &str) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["controller.kgw.internal".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
        .unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.pem).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
}

#[tokio::test]
async fn certificates_reload_and_a_broken_rotation_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    write_leaf(&ca, dir.path(), "kgw-process:controller");
    let mtls = Mtls::load(dir.path()).unwrap();
    let first = mtls.material().describe().to_string();
    assert!(first.starts_with("kgw-process:controller"), "{first}");

    write_leaf(&ca, dir.path(), "kgw-process:gateway");
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if mtls.material().describe().starts_with("kgw-process:gateway") {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "new certificate not picked up in 5 s");

    // A key that does not match: refused, the previous material stays.
    let good = mtls.material().digest;
    let other = KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("tls.key"), other.serialize_pem()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        mtls.material().digest,
        good,
        "a certificate with a foreign key was taken"
    );
}

#[tokio::test]
async fn an_incomplete_folder_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = Mtls::load(dir.path()).unwrap_err();
    assert!(
        matches!(error, TlsError::Read { ref path, .. } if path.ends_with("ca.crt")),
        "{error}"
    );
    let neither = kgw_common::tls::TlsMode::from_flags(None, false).unwrap_err();
    assert!(neither.to_string().contains("--insecure-no-mtls"), "{neither}");
}
