//! Golden tests of the VRRP state machine: event streams in, actions out.
//!
//! Each file in `tests/vrrp_golden/` is both the input and the expected
//! output. Lines starting with `#` say what goes in and what must come out;
//! `config key=value...` sets up the instance; `at <ms>: <event>` feeds an
//! event at that time (milliseconds after the start); the indented lines
//! under an event are the actions it must produce, times shown relative to
//! the start. Run with `LB_BLESS=1` to rewrite the indented lines from what
//! the state machine does now, then review the diff.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use lb_agent::vrrp::fsm::{Action, Config, Event, State, Vrrp};
use lb_agent::vrrp::packet::Version;

fn parse_duration(s: &str) -> Duration {
    if let Some(cs) = s.strip_suffix("cs") {
        Duration::from_millis(cs.parse::<u64>().expect("centiseconds") * 10)
    } else if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().expect("milliseconds"))
    } else if let Some(sec) = s.strip_suffix('s') {
        Duration::from_secs(sec.parse().expect("seconds"))
    } else {
        panic!("duration {s:?} needs a unit (s, ms, cs)")
    }
}

fn kv(words: &[&str]) -> Vec<(String, String)> {
    words
        .iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("{w:?} is not key=value"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn parse_config(words: &[&str]) -> Config {
    let mut cfg = Config {
        version: Version::V3,
        priority: 100,
        adver_int: Duration::from_secs(1),
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary_address: "10.0.0.1".parse().unwrap(),
        initial_master: false,
        sync_group: false,
    };
    for (k, v) in kv(words) {
        match k.as_str() {
            "version" => {
                cfg.version = match v.as_str() {
                    "2" => Version::V2,
                    "3" => Version::V3,
                    _ => panic!("version {v}"),
                }
            }
            "priority" => cfg.priority = v.parse().unwrap(),
            "adver_int" => cfg.adver_int = parse_duration(&v),
            "preempt" => cfg.preempt = v.parse().unwrap(),
            "preempt_delay" => cfg.preempt_delay = parse_duration(&v),
            "address" => cfg.primary_address = v.parse().unwrap(),
            "initial_master" => cfg.initial_master = v.parse().unwrap(),
            "sync_group" => cfg.sync_group = v.parse().unwrap(),
            _ => panic!("unknown config key {k}"),
        }
    }
    cfg
}

fn parse_event(text: &str) -> Event {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words[0] {
        "startup" => Event::Startup,
        "shutdown" => Event::Shutdown,
        "master_down_timer" => Event::MasterDownTimer,
        "adver_timer" => Event::AdverTimer,
        "vip_add_failed" => Event::VipAddFailed,
        "vip_retry_timer" => Event::VipRetryTimer,
        "group_ready" => Event::SyncGroupReady(true),
        "group_not_ready" => Event::SyncGroupReady(false),
        "group_state" => Event::SyncGroupState(match words.get(1).copied() {
            Some("MASTER") => State::Master,
            Some("BACKUP") => State::Backup,
            Some("FAULT") => State::Fault,
            other => panic!("group_state {other:?}: MASTER, BACKUP or FAULT"),
        }),
        "advert" => {
            let mut src: Option<IpAddr> = None;
            let mut priority = None;
            let mut adver_int = Duration::from_secs(1);
            for (k, v) in kv(&words[1..]) {
                match k.as_str() {
                    "from" => src = Some(v.parse().unwrap()),
                    "priority" => priority = Some(v.parse().unwrap()),
                    "adver_int" => adver_int = parse_duration(&v),
                    _ => panic!("unknown advert key {k}"),
                }
            }
            Event::Advert {
                src: src.expect("advert from="),
                priority: priority.expect("advert priority="),
                adver_int,
            }
        }
        "tracking" => {
            let mut delta = 0;
            let mut fault = false;
            for (k, v) in kv(&words[1..]) {
                match k.as_str() {
                    "delta" => delta = v.parse().unwrap(),
                    "fault" => fault = v.parse().unwrap(),
                    _ => panic!("unknown tracking key {k}"),
                }
            }
            Event::Tracking { delta, fault }
        }
        other => panic!("unknown event {other}"),
    }
}

fn render(action: &Action, t0: Instant) -> String {
    match action {
        Action::SendAdvert { priority } => format!("send_advert priority={priority}"),
        Action::InstallVips => "install_vips".into(),
        Action::RemoveVips => "remove_vips".into(),
        Action::SendGarp => "send_garp".into(),
        Action::StopGarp => "stop_garp".into(),
        Action::SetTimer { timer, at } => {
            format!("set_timer {timer:?} at={:?}", at.duration_since(t0))
        }
        Action::StopTimer { timer } => format!("stop_timer {timer:?}"),
        Action::SyncGroupState { state } => format!("sync_group_state {}", state.name()),
        Action::SyncWant { master } => format!("sync_want master={master}"),
        Action::Notify {
            from,
            to,
            priority,
            reason,
        } => format!(
            "notify {} -> {} priority={priority} reason={reason:?}",
            from.name(),
            to.name()
        ),
    }
}

/// Runs one golden file and returns the text it should contain.
fn run(text: &str) -> String {
    let t0 = Instant::now();
    let mut vrrp: Option<Vrrp> = None;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("  ") {
            continue; // expected output, regenerated below
        }
        out.push_str(line);
        out.push('\n');
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("config") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            vrrp = Some(Vrrp::new(parse_config(&words)));
            continue;
        }
        let rest = trimmed
            .strip_prefix("at ")
            .unwrap_or_else(|| panic!("line {trimmed:?}: expected `at <ms>: <event>`"));
        let (time, event) = rest.split_once(':').expect("`at <ms>: <event>`");
        let now = t0 + parse_duration(time.trim());
        let vrrp = vrrp.as_mut().expect("config before events");
        for action in vrrp.handle(parse_event(event.trim()), now) {
            out.push_str("  ");
            out.push_str(&render(&action, t0));
            out.push('\n');
        }
        out.push_str(&format!("  = {}\n", vrrp.state().name()));
    }
    out
}

#[test]
fn golden_event_streams() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vrrp_golden");
    let bless = std::env::var_os("LB_BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    let mut failed = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let got = run(&text);
        if got != text {
            if bless {
                std::fs::write(path, &got).unwrap();
            } else {
                eprintln!("--- {} expected\n{text}\n--- got\n{got}", path.display());
                failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "golden files differ (LB_BLESS=1 rewrites them): {failed:?}"
    );
}
