//! In-process tests of the runner against servers on 127.0.0.1: transitions
//! counted exactly, service actions, quorum hook, config changes that keep
//! state, even spreading and bounded concurrency.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use tokio::{net::TcpListener, sync::mpsc, time::Instant};

use super::{
    config::{
        CheckKind, CheckSpec, Health, HttpSpec, HttpVersion, QuorumSpec, RealServerSpec,
        ServiceSpec, SorrySpec, Timing,
    },
    outcome::Failure,
    runner::{
        AttemptObserver, HealthEvent, HealthHandle, RunnerSettings, spawn, spawn_with_observer,
    },
    service::{DestinationChange, ServiceAction, Target},
    state::Transition,
    test_servers::{LOCAL, http_server},
};

const MS: Duration = Duration::from_millis(1);
/// Upper bound on waiting for any one event.
const WAIT: Duration = Duration::from_secs(5);

fn timing(interval_ms: u64, rise: u32, fall: u32) -> Timing {
    Timing {
        interval: Duration::from_millis(interval_ms),
        timeout: 300 * MS,
        rise,
        fall,
        ..Timing::default()
    }
}

fn http_check(t: Timing) -> CheckSpec {
    CheckSpec {
        kind: CheckKind::Http(HttpSpec {
            path: "/".into(),
            host: None,
            sni: None,
            tls: false,
            tls_verify: false,
            version: HttpVersion::Http1,
            expected_status: vec![],
            body: None,
        }),
        timing: t,
        ..CheckSpec::default()
    }
}

fn rs(addr: SocketAddr, weight: u32, check: CheckSpec) -> RealServerSpec {
    RealServerSpec {
        name: addr.to_string(),
        addr,
        weight,
        drain: false,
        check,
    }
}

fn service(name: &str, real_servers: Vec<RealServerSpec>) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        vip: None,
        port: 80,
        inhibit_on_failure: false,
        slow_start: None,
        sorry: None,
        quorum: QuorumSpec::default(),
        real_servers,
    }
}

fn start() -> (HealthHandle, mpsc::Receiver<HealthEvent>) {
    let (tx, rx) = mpsc::channel(1024);
    let (h, _task) = spawn(
        RunnerSettings {
            max_concurrent: 64,
            seed: 7,
        },
        tx,
    );
    (h, rx)
}

/// The next transition event, skipping actions (which are returned too).
async fn next_transition(
    rx: &mut mpsc::Receiver<HealthEvent>,
) -> (SocketAddr, Transition, Vec<ServiceAction>) {
    let deadline = Instant::now() + WAIT;
    let mut actions = vec![];
    loop {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no transition in time")
            .expect("runner stopped");
        match ev {
            HealthEvent::Transition {
                addr, transition, ..
            } => return (addr, transition, actions),
            HealthEvent::Action { action, .. } => actions.push(action),
        }
    }
}

/// The actions that follow (until the channel is quiet for 50 ms).
/// Every event until none comes for 50 ms.
async fn quiet_events(rx: &mut mpsc::Receiver<HealthEvent>) -> Vec<HealthEvent> {
    let mut out = vec![];
    while let Ok(Some(ev)) = tokio::time::timeout(50 * MS, rx.recv()).await {
        out.push(ev);
    }
    out
}

async fn drain_actions(rx: &mut mpsc::Receiver<HealthEvent>) -> Vec<ServiceAction> {
    quiet_events(rx)
        .await
        .into_iter()
        .filter_map(|ev| match ev {
            HealthEvent::Action { action, .. } => Some(action),
            _ => None,
        })
        .collect()
}

fn set_weight(service: &str, addr: SocketAddr, weight: u32) -> HealthEvent {
    HealthEvent::Action {
        service: service.into(),
        action: ServiceAction::Destination {
            target: Target::Real(addr),
            change: DestinationChange::SetWeight { weight },
        },
    }
}

// In: an HTTP real server, rise 3, fall 2, interval 100 ms; the server
// answers 200, then 503, then 200 again.
// Out: up after exactly 3 answered checks, down after exactly 2 answers of
// 503, up again after exactly 3 more 200s; the table follows.
#[tokio::test]
async fn rise_and_fall_counted_exactly_against_a_server() {
    let srv = http_server(false).await;
    let (h, mut rx) = start();
    h.apply(vec![service(
        "web",
        vec![rs(srv.addr, 5, http_check(timing(100, 3, 2)))],
    )])
    .await
    .unwrap();

    let (addr, t, _) = next_transition(&mut rx).await;
    assert_eq!((addr, t), (srv.addr, Transition::Up { weight: None }));
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);
    let actions = drain_actions(&mut rx).await;
    assert!(actions.contains(&ServiceAction::Destination {
        target: Target::Real(srv.addr),
        change: DestinationChange::Add { weight: 5 }
    }));

    srv.reply.lock().unwrap().status = 503;
    let (_, t, _) = next_transition(&mut rx).await;
    assert_eq!(
        t,
        Transition::Down {
            reason: Failure::Status {
                got: 503,
                want: "200..299".into()
            }
        }
    );
    assert_eq!(srv.bad.load(Ordering::SeqCst), 2);
    let actions = drain_actions(&mut rx).await;
    assert!(actions.contains(&ServiceAction::Destination {
        target: Target::Real(srv.addr),
        change: DestinationChange::Remove
    }));

    let before = srv.hits.load(Ordering::SeqCst);
    srv.reply.lock().unwrap().status = 200;
    let (_, t, _) = next_transition(&mut rx).await;
    assert_eq!(t, Transition::Up { weight: None });
    assert_eq!(srv.hits.load(Ordering::SeqCst) - before, 3);
}

/// One observed attempt: service, real server, up, latency.
type Observed = (String, String, bool, Duration);

// In: an HTTP real server that answers after 20 ms, rise 3, fall 2, interval
// 100 ms, and an observer; the server answers 200, then 503.
// Out: when the up transition arrives the observer has seen exactly the 3
// attempts the server answered, all up, named "web" and the real server, each
// between the server's 20 ms delay and the 300 ms timeout; when the down
// transition arrives, exactly 2 more, down.
#[tokio::test]
async fn observer_sees_every_attempt_with_its_latency() {
    let srv = http_server(false).await;
    srv.reply.lock().unwrap().delay = 20 * MS;
    let seen: Arc<Mutex<Vec<Observed>>> = Arc::default();
    let observer: AttemptObserver = {
        let seen = seen.clone();
        Arc::new(move |service: &str, real_server: &str, up, latency| {
            seen.lock()
                .unwrap()
                .push((service.into(), real_server.into(), up, latency));
        })
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let (h, _task) = spawn_with_observer(
        RunnerSettings {
            max_concurrent: 64,
            seed: 7,
        },
        tx,
        Some(observer),
    );
    h.apply(vec![service(
        "web",
        vec![rs(srv.addr, 5, http_check(timing(100, 3, 2)))],
    )])
    .await
    .unwrap();

    let (_, t, _) = next_transition(&mut rx).await;
    assert_eq!(t, Transition::Up { weight: None });
    let check = |seen: &[Observed], up: bool| {
        for (service, real_server, was_up, latency) in seen {
            assert_eq!(
                (service.as_str(), real_server.clone(), *was_up),
                ("web", srv.addr.to_string(), up)
            );
            assert!(
                (20 * MS..300 * MS).contains(latency),
                "latency {latency:?} is not within 20..300 ms"
            );
        }
    };
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(srv.hits.load(Ordering::SeqCst), 3);
        check(&seen, true);
    }

    srv.reply.lock().unwrap().status = 503;
    let (_, t, _) = next_transition(&mut rx).await;
    assert!(matches!(t, Transition::Down { .. }), "{t:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5, "{seen:?}");
    check(&seen[3..], false);
}

// In: two real servers, one up and one refused, a sorry server and quorum 2;
// then the good one fails.
// Out: the quorum watch (the VRRP hook) reads lost, the sorry server goes in.
#[tokio::test]
async fn quorum_hook_and_sorry_server() {
    let good = http_server(false).await;
    let dead = super::test_servers::closed_port().await;
    let (h, mut rx) = start();
    let mut svc = service(
        "web",
        vec![
            rs(good.addr, 2, http_check(timing(100, 1, 1))),
            rs(dead, 2, http_check(timing(100, 1, 1))),
        ],
    );
    let sorry: SocketAddr = "127.0.0.9:80".parse().unwrap();
    svc.sorry = Some(SorrySpec {
        addr: sorry,
        inhibit: false,
    });
    svc.quorum = QuorumSpec {
        value: 2,
        hysteresis: 0,
    };
    let mut quorum = h.quorum();
    h.apply(vec![svc]).await.unwrap();
    // Nothing is up yet: no quorum, sorry server in.
    assert!(!quorum.borrow_and_update()["web"].up);
    let (addr, t, _) = next_transition(&mut rx).await;
    assert_eq!((addr, t), (good.addr, Transition::Up { weight: None }));
    tokio::time::timeout(WAIT, quorum.wait_for(|q| q["web"].up))
        .await
        .unwrap()
        .unwrap();
    let actions = drain_actions(&mut rx).await;
    assert!(actions.contains(&ServiceAction::SorryServer { active: false }));

    good.reply.lock().unwrap().status = 500;
    let (addr, t, _) = next_transition(&mut rx).await;
    assert_eq!(addr, good.addr);
    assert!(matches!(t, Transition::Down { .. }));
    let actions = drain_actions(&mut rx).await;
    assert!(actions.contains(&ServiceAction::Destination {
        target: Target::Sorry(sorry),
        change: DestinationChange::Add { weight: 1 }
    }));
    assert!(actions.contains(&ServiceAction::QuorumChanged {
        up: false,
        weight: 0
    }));
    assert!(!quorum.borrow()["web"].up);
}

// In: a service with one real server, up; then a new configuration that
// changes its weight and adds a second real server; then one that drops the
// first. Out: no new transition for the kept one (its state is kept), a
// SetWeight for it, the new one checked from scratch, the dropped one removed.
#[tokio::test]
async fn config_change_keeps_unchanged_checks() {
    let a = http_server(false).await;
    let b = http_server(false).await;
    let (h, mut rx) = start();
    let check = http_check(timing(100, 1, 1));
    h.apply(vec![service("web", vec![rs(a.addr, 1, check.clone())])])
        .await
        .unwrap();
    let (addr, _, _) = next_transition(&mut rx).await;
    assert_eq!(addr, a.addr);
    drain_actions(&mut rx).await;

    h.apply(vec![service(
        "web",
        vec![rs(a.addr, 4, check.clone()), rs(b.addr, 1, check.clone())],
    )])
    .await
    .unwrap();
    let (addr, t, before) = next_transition(&mut rx).await;
    assert_eq!((addr, t), (b.addr, Transition::Up { weight: None }));
    assert!(before.contains(&ServiceAction::Destination {
        target: Target::Real(a.addr),
        change: DestinationChange::SetWeight { weight: 4 }
    }));
    drain_actions(&mut rx).await;

    h.apply(vec![service("web", vec![rs(b.addr, 1, check)])])
        .await
        .unwrap();
    let actions = drain_actions(&mut rx).await;
    assert_eq!(
        actions,
        vec![ServiceAction::Destination {
            target: Target::Real(a.addr),
            change: DestinationChange::Remove
        }]
    );
    // No transition at all for the kept real server over three more intervals.
    let quiet = tokio::time::timeout(350 * MS, async {
        loop {
            if let Some(HealthEvent::Transition { .. }) = rx.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "a kept check made a transition");
}

// In: 200 TCP checks at a 1 s interval against one listener.
// Out: over the first interval they start spread evenly: every 100 ms
// window holds about 20 connections; none starts late.
#[tokio::test]
async fn checks_spread_evenly_over_the_interval() {
    let l = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let times = Arc::new(Mutex::new(vec![]));
    let t = times.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            t.lock().unwrap().push(Instant::now());
            drop(s);
        }
    });
    let (h, mut rx) = start();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let check = CheckSpec {
        kind: CheckKind::Tcp,
        timing: timing(1000, 1, 1),
        connect_port: Some(addr.port()),
        ..CheckSpec::default()
    };
    // 200 real servers on 127.0.0.0/8 addresses, all checked on the one port.
    let servers = (0..200u32)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x7f00_0000 | (1 + i));
            let mut c = check.clone();
            c.connect_address = Some(LOCAL);
            rs(SocketAddr::from((ip, 80)), 1, c)
        })
        .collect();
    let t0 = Instant::now();
    h.apply(vec![service("many", servers)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let times = times.lock().unwrap().clone();
    let mut buckets = [0usize; 10];
    for t in &times {
        let ms = t.duration_since(t0).as_millis() as usize;
        if ms < 1000 {
            buckets[ms / 100] += 1;
        }
    }
    // Exactly 20 per window when idle; the wide margin absorbs a loaded
    // machine (tests run in parallel on two cores). A burst would put all
    // 200 in one window and leave the others empty.
    assert!(
        buckets.iter().all(|&n| (4..=60).contains(&n)),
        "uneven: {buckets:?}"
    );
    // The last window's starts may slip past the second on a loaded
    // machine; they are counted below, after a bounded wait.
    assert!(buckets.iter().sum::<usize>() >= 180, "{buckets:?}");
    // Every first check ran (the last ones start just before the interval
    // ends, so wait for them a bounded time); lateness under load is the
    // bench's figure, not asserted here.
    let mut stats_rx = h.stats();
    let all_ran = tokio::time::timeout(
        Duration::from_secs(5),
        stats_rx.wait_for(|s| s.checks >= 200),
    )
    .await;
    assert!(all_ran.is_ok(), "{:?}", *h.stats().borrow());
}

// In: an exec check whose user does not exist. Out: apply fails naming the
// service and real server; the runner keeps the earlier configuration.
#[tokio::test]
async fn apply_rejects_bad_exec_user_as_a_whole() {
    let (h, _rx) = start();
    let mut check = CheckSpec {
        kind: CheckKind::Exec(super::config::ExecSpec {
            command: vec!["/bin/true".into()],
            user: Some("no-such-user-lb".into()),
            dynamic_weight: false,
        }),
        ..CheckSpec::default()
    };
    check.timing.start_state = Health::Down;
    let e = h
        .apply(vec![service(
            "web",
            vec![rs("127.0.0.1:80".parse().unwrap(), 1, check)],
        )])
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "service web, real server 127.0.0.1:80: healthCheck.exec.user: user 'no-such-user-lb' does not exist"
    );
    assert_eq!(h.stats().borrow().checks, 0);
}

// In: 50 exec checks that each sleep 200 ms, max_concurrent 5.
// Out: never more than 5 run at once (counted by the commands themselves).
#[tokio::test]
async fn concurrency_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let (h, _task) = spawn(
        RunnerSettings {
            max_concurrent: 5,
            seed: 1,
        },
        tx,
    );
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    // Each run creates a file while it runs; the largest count seen is the concurrency.
    let script = format!(
        "f={d}/$$; touch $f; n=$(ls {d} | wc -l); echo $n >> {d}.max; sleep 0.2; rm $f",
        d = dir.path().display()
    );
    let check = CheckSpec {
        kind: CheckKind::Exec(super::config::ExecSpec {
            command: vec!["/bin/sh".into(), "-c".into(), script],
            user: None,
            dynamic_weight: false,
        }),
        timing: Timing {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            ..Timing::default()
        },
        ..CheckSpec::default()
    };
    let servers = (0..50u16)
        .map(|i| {
            rs(
                SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                1,
                check.clone(),
            )
        })
        .collect();
    // All 50 are due within the first second; 5 at a time at 0.2 s each
    // serve 25 a second, so attempts queue for permits.
    h.apply(vec![service("exec", servers)]).await.unwrap();
    let stats = h.stats();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = stats.borrow().started;
        let max_path = format!("{}.max", dir.path().display());
        let lines = std::fs::read_to_string(&max_path).unwrap_or_default();
        if lines.lines().count() >= 50 {
            let max: usize = lines
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .max()
                .unwrap();
            assert!((4..=5).contains(&max), "{max} ran at once");
            let _ = std::fs::remove_file(&max_path);
            break;
        }
        assert!(Instant::now() < deadline, "only {started} started");
        tokio::time::sleep(100 * MS).await;
    }
}

// In: two services up, then a configuration that changes only the weight of
// one's real server, with the other service's spec unchanged. Out: exactly one
// action, the SetWeight of the changed service; nothing for the other (its
// state is left as it was, not rebuilt).
#[tokio::test]
async fn only_changed_services_are_reconfigured() {
    let a = http_server(false).await;
    let b = http_server(false).await;
    let (h, mut rx) = start();
    let check = http_check(timing(100, 1, 1));
    let both = |wa| {
        vec![
            service("one", vec![rs(a.addr, wa, check.clone())]),
            service("two", vec![rs(b.addr, 1, check.clone())]),
        ]
    };
    h.apply(both(1)).await.unwrap();
    next_transition(&mut rx).await;
    next_transition(&mut rx).await;
    drain_actions(&mut rx).await;
    h.apply(both(3)).await.unwrap();
    assert_eq!(
        quiet_events(&mut rx).await,
        vec![set_weight("one", a.addr, 3)]
    );
}

// In: two services up; an update that changes one real server's weight in
// the first and names no other; an update that only removes the second; an
// update refused (a real server listed twice); then a whole apply that
// brings the second back. Out: the first update makes exactly the SetWeight
// and leaves the second service's check running; the removal stops its
// check and drops its quorum, with no event; the refused update changes
// nothing; the second service comes back checked from scratch.
#[tokio::test]
async fn updates_touch_only_the_services_they_name() {
    let a = http_server(false).await;
    let b = http_server(false).await;
    let (h, mut rx) = start();
    let check = http_check(timing(100, 1, 1));
    let one = |w| service("one", vec![rs(a.addr, w, check.clone())]);
    let two = service("two", vec![rs(b.addr, 1, check.clone())]);
    h.apply(vec![one(1), two.clone()]).await.unwrap();
    next_transition(&mut rx).await;
    next_transition(&mut rx).await;
    drain_actions(&mut rx).await;
    let mut stats = h.stats();
    assert_eq!(stats.borrow_and_update().checks, 2);

    h.update(vec![one(3)], vec![], Default::default())
        .await
        .unwrap();
    assert_eq!(
        quiet_events(&mut rx).await,
        vec![set_weight("one", a.addr, 3)]
    );
    assert_eq!(stats.borrow_and_update().checks, 2, "two's check stopped");
    assert!(h.quorum().borrow().contains_key("two"));

    h.update(vec![], vec!["two".into()], Default::default())
        .await
        .unwrap();
    assert_eq!(stats.borrow_and_update().checks, 1);
    assert!(!h.quorum().borrow().contains_key("two"));
    assert!(h.quorum().borrow().contains_key("one"));
    let after_remove = drain_actions(&mut rx).await;
    assert!(after_remove.is_empty(), "{after_remove:?}");

    let twice = service(
        "three",
        vec![rs(b.addr, 1, check.clone()), rs(b.addr, 2, check.clone())],
    );
    let refused = h
        .update(vec![twice], vec!["one".into()], Default::default())
        .await;
    assert!(refused.is_err(), "a real server listed twice was taken");
    assert_eq!(
        stats.borrow_and_update().checks,
        1,
        "a refused update moved"
    );
    assert!(h.quorum().borrow().contains_key("one"));

    h.apply(vec![one(3), two]).await.unwrap();
    let (addr, t, _) = next_transition(&mut rx).await;
    assert_eq!((addr, t), (b.addr, Transition::Up { weight: None }));
    assert_eq!(stats.borrow_and_update().checks, 2);
}
