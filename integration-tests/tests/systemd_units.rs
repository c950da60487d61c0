//! The systemd units of `deploy/systemd/`: `systemd-analyze verify` accepts
//! them without a word, and they hold the settings the agents rely on (the
//! command line, signals, two capabilities, a state directory, the sandbox
//! with /proc/sys/net writable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use lb_lab::{Cmd, bin_path};

const UNITS: [&str; 2] = ["lb-agent-director.service", "lb-agent-realserver.service"];

fn unit_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd")
        .join(name)
}

/// `[Service]` keys of a unit file, each with its values in order.
fn service_section(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if let (true, Some((k, v))) = (in_service, line.split_once('=')) {
            keys.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    keys
}

#[test]
fn units_hold_the_agents_settings() -> Result<()> {
    for name in UNITS {
        let text = std::fs::read_to_string(unit_path(name))?;
        let keys = service_section(&text);
        let one = |k: &str| -> Result<&str> {
            match keys.get(k).map(Vec::as_slice) {
                Some([v]) => Ok(v.as_str()),
                other => anyhow::bail!("{name}: {k} is {other:?}, expected one value"),
            }
        };
        let role = if name.contains("director") {
            "director --config /etc/lb/director.yaml --node %H"
        } else {
            "realserver --config /etc/lb/realserver.yaml"
        };
        ensure!(
            one("ExecStart")? == format!("/usr/bin/lb-agent {role}"),
            "{name}"
        );
        ensure!(one("ExecReload")? == "/bin/kill -HUP $MAINPID", "{name}");
        for (k, v) in [
            ("KillSignal", "SIGTERM"),
            ("Restart", "on-failure"),
            ("CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"),
            ("AmbientCapabilities", "CAP_NET_ADMIN CAP_NET_RAW"),
            ("NoNewPrivileges", "yes"),
            ("DynamicUser", "yes"),
            ("StateDirectory", "lb-agent"),
            ("ProtectSystem", "strict"),
            ("ReadWritePaths", "/proc/sys/net"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
        ] {
            ensure!(one(k)? == v, "{name}: {k}={} (want {v})", one(k)?);
        }
        // Writing net sysctls needs /proc/sys writable.
        ensure!(
            !keys.contains_key("ProtectKernelTunables"),
            "{name}: ProtectKernelTunables"
        );
    }
    Ok(())
}

/// systemd's own parser: no unknown key, no bad value, the command exists
/// (the built `lb-agent` stands in for /usr/bin/lb-agent).
#[test]
fn systemd_analyze_verify_accepts_the_units() -> Result<()> {
    let agent = bin_path("lb-agent");
    ensure!(
        agent.exists(),
        "{} is missing: cargo build -p lb-agent",
        agent.display()
    );
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for name in UNITS {
        let text = std::fs::read_to_string(unit_path(name))?;
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            text.replace("/usr/bin/lb-agent", agent.to_str().context("agent path")?),
        )?;
        files.push(path);
    }
    let out = Cmd::new(["systemd-analyze", "verify"])
        .args(&files)
        .run()
        .context("systemd-analyze (Debian package systemd, see .ci/install-deps)")?;
    ensure!(
        out.success() && out.stderr.trim().is_empty() && out.stdout.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(())
}
