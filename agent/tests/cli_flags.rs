//! `lb-agent` answers --help and --version, and refuses a bad file with the
//! path of the offending field.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lb-agent"))
}

#[test]
fn version_and_help() {
    let out = agent().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("lb-agent {}", env!("CARGO_PKG_VERSION"))
    );
    let out = agent().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("director") && help.contains("realserver"),
        "{help}"
    );
}

#[test]
fn director_check_reads_a_seed_and_refuses_a_misspelt_field() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-000-dns-dr.yaml"
    );
    let out = agent()
        .args(["director", "--check", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("vrid:", "vird:");
    std::fs::write(&bad, text).unwrap();
    let out = agent()
        .args(["director", "--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("directorGroups[0].vrrp.instances[0].vird"),
        "{stderr}"
    );
}
