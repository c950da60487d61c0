//! `lbctl` answers --help and --version, and `lbctl validate` reads every
//! example and refuses a misspelt field with its path.

use std::process::Command;

fn lbctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbctl"))
}

#[test]
fn version_and_help() {
    let out = lbctl().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("lbctl {}", env!("CARGO_PKG_VERSION"))
    );
    let out = lbctl().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("validate"));
}

#[test]
fn validate_examples_and_a_misspelt_field() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    for name in [
        "seed-000-dns-dr.yaml",
        "seed-001-http-dr.yaml",
        "seed-002-active-active.yaml",
        "seed-003-http-tun.yaml",
        "seed-004-gateway-track.yaml",
    ] {
        let out = lbctl()
            .arg("validate")
            .arg(format!("{dir}/{name}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tmp = std::env::temp_dir().join(format!("lbctl-misspelt-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(format!("{dir}/seed-001-http-dr.yaml"))
        .unwrap()
        .replace("scheduler:", "schedular:");
    std::fs::write(&tmp, text).unwrap();
    let out = lbctl().arg("validate").arg(&tmp).output().unwrap();
    let _ = std::fs::remove_file(&tmp);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("services[0].schedular"), "{stderr}");
}
