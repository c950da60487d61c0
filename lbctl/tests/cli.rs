//! lbctl against a controller served in the test (embedded store).

use std::sync::Arc;

use lb_controller::controller::{Controller, ControllerConfig};
use lb_controller::store::embedded::EmbeddedStore;

/// Seed 000 (DNS over LVS-DR, two directors), from `examples/`.
const SEED: &str = include_str!("../../examples/seed-000-dns-dr.yaml");

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn lbctl(url: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("--controller")
        .arg(url)
        .args(args)
        .output()
        .await
        .expect("run lbctl");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lbctl_drives_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let controller = Controller::start(store, ControllerConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(lb_controller::server::run(
        controller,
        listener,
        std::future::pending(),
    ));
    let file = dir.path().join("topology.yaml");
    std::fs::write(&file, SEED).unwrap();
    let f = file.to_str().unwrap();

    let r = lbctl(&url, &["validate", f]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("valid: 4 nodes, 1 director groups, 1 services")
    );

    let r = lbctl(&url, &["diff", "-f", f]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains("node ds1:\n  + director group dns-lb\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("  + service dns\n"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("dry run: changes at revision 0; 4 node(s) would change")
    );

    let r = lbctl(&url, &["apply", "-f", f, "-m", "first"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains("revision 1: 4 node(s) change"),
        "{}",
        r.stdout
    );

    let r = lbctl(&url, &["get", "service", "dns"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("scheduler: wrr"), "{}", r.stdout);

    let r = lbctl(&url, &["get", "nodes"]).await;
    assert!(r.stdout.starts_with("# revision 1\n"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("role:").count(), 4);

    let r = lbctl(&url, &["drain", "dns", "rs2"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout, "drained at revision 2\n");

    let r = lbctl(&url, &["describe", "service", "dns"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("drain: true"), "{}", r.stdout);
    assert!(r.stdout.contains("# status at revision 2"), "{}", r.stdout);
    assert!(r.stdout.contains("rs1 "), "{}", r.stdout);

    let r = lbctl(&url, &["status"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.starts_with("revision 2\nNODE"), "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 2 + 4);

    let r = lbctl(&url, &["history"]).await;
    assert!(r.ok, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    assert!(lines[1].contains("drain rs2 of service dns") && lines[1].contains("lbctl:"));
    assert!(lines[2].trim_start().starts_with("1 ") && lines[2].ends_with("first"));

    let r = lbctl(&url, &["rollback", "1"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("revision 3"), "{}", r.stdout);

    // An invalid file: refused with the field named, nothing stored.
    std::fs::write(&file, SEED.replace("weight: 1}", "weight: 70000}")).unwrap();
    let r = lbctl(&url, &["validate", f]).await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains(
            "error: service dns: field realServers[0].weight: 70000 is out of range 0..65535"
        ),
        "{}",
        r.stderr
    );
    let r = lbctl(&url, &["apply", "-f", f]).await;
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("realServers[1].weight: 70000 is out of range"),
        "{}",
        r.stderr
    );
    let r = lbctl(&url, &["history", "--limit", "1"]).await;
    assert!(r.stdout.contains("rollback to revision 1"), "{}", r.stdout);

    let r = lbctl(&url, &["delete", "service", "dns", "-m", "bye"]).await;
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("revision 4"), "{}", r.stdout);
    let r = lbctl(&url, &["get", "service", "dns"]).await;
    assert!(!r.ok);
    assert!(
        r.stderr.contains("service 'dns' does not exist"),
        "{}",
        r.stderr
    );
}
