use std::process::Command;

#[test]
fn finds_or_installs_nats_server() {
    let path = kgw_harness::ensure_nats_server().unwrap();
    assert!(
        kgw_harness::tools::is_elf(&path),
        "{} is not an ELF binary",
        path.display()
    );
    let out = Command::new(&path).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("v2."));
}

#[test]
fn finds_or_installs_envoy() {
    let path = kgw_harness::ensure_envoy().unwrap();
    assert!(
        kgw_harness::tools::is_elf(&path),
        "{} is not an ELF binary",
        path.display()
    );
    let out = Command::new(&path).arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("version:"));
    // Cached: the same answer again.
    assert_eq!(kgw_harness::ensure_envoy().unwrap(), path);
}
