//! Health-check benchmark (ignored by `cargo test`; `make bench BENCH=health`
//! runs it): 10,000 TCP checks at a 1 s interval against 10,000 listeners on
//! 10,000 addresses of one interface of one lab host, and HTTP checks against
//! the same nginx. The runner runs on one thread (a current-thread
//! tokio runtime inside the lab's network namespace), so its CPU time is the
//! cost "at one core".
//!
//! Prints `BENCH <name> <value> <unit>` lines.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use lb_agent::health::{
    config::{
        CheckKind, CheckSpec, HttpSpec, HttpVersion, QuorumSpec, RealServerSpec, ServiceSpec,
        Timing,
    },
    runner::{HealthEvent, RunnerSettings, spawn},
    state::Transition,
};
use lb_lab::{Host, Lab};
use nix::sys::resource::{UsageWho, getrusage};

const N_TCP: u32 = 10_000;
const N_HTTP: u32 = 1_000;

/// The lab: one host whose `lo` carries the 10,000 real-server addresses;
/// nginx and the checks both run in it.
fn lab() -> (Lab, Host) {
    let lab = Lab::new("health-bench").unwrap();
    let host = lab.bare_host("rs").unwrap();
    let batch = lab.dir().join("addrs");
    let mut f = std::fs::File::create(&batch).unwrap();
    for i in 0..N_TCP {
        writeln!(f, "address add {}/32 dev lo", addr(i)).unwrap();
    }
    drop(f);
    host.ip(["-batch", batch.to_str().unwrap()]).unwrap();
    (lab, host)
}

/// Address of real server `i`: 10.77.0.1, 10.77.0.2, ...
fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a4d_0000 + 1 + i)
}

/// nginx in the lab: one listening socket per real-server address on port 80
/// (10,000 listeners: TCP checks), and HTTP on port 8080 of every address.
fn nginx_conf(lab: &Lab) -> std::path::PathBuf {
    let conf = lab.dir().join("nginx.conf");
    let mut listens = String::new();
    for i in 0..N_TCP {
        listens.push_str(&format!("listen {}:80 backlog=1024;\n", addr(i)));
    }
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1; daemon off; worker_rlimit_nofile 30000;\n\
             pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 16384; }}\n\
             http {{ access_log off;\n\
               server {{ {listens} location / {{ return 200 \"ok\\n\"; }} }}\n\
               server {{ listen 8080 backlog=4096; location / {{ return 200 \"ok\\n\"; }} }}\n\
             }}\n",
            d = lab.dir().display()
        ),
    )
    .unwrap();
    conf
}

/// Waits (bounded) until nginx accepts on the last address.
fn wait_listening() -> bool {
    let last = SocketAddr::new(IpAddr::V4(addr(N_TCP - 1)), 80);
    for _ in 0..200 {
        if std::net::TcpStream::connect_timeout(&last, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// CPU time of the calling thread: (user, system).
fn cpu_time() -> (Duration, Duration) {
    let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    (tv(u.user_time()), tv(u.system_time()))
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

fn service(name: &str, n: u32, check: CheckSpec) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        vip: None,
        port: 80,
        inhibit_on_failure: false,
        slow_start: None,
        sorry: None,
        quorum: QuorumSpec::default(),
        real_servers: (0..n)
            .map(|i| RealServerSpec {
                name: addr(i).to_string(),
                addr: SocketAddr::new(IpAddr::V4(addr(i)), 80),
                weight: 1,
                drain: false,
                check: check.clone(),
            })
            .collect(),
    }
}

struct Figures {
    cpu_pct: f64,
    /// The kernel's share (on loopback it includes the server side's packet handling).
    sys_pct: f64,
    per_s: f64,
    rss_mib: f64,
    late: u64,
    max_lag: Duration,
    up: usize,
    failed: u64,
}

/// Runs `svc` on a one-thread runtime in the lab for `warmup + window`;
/// measures over the window.
fn measure(host: &Host, svc: ServiceSpec, warmup: Duration, window: Duration) -> Figures {
    let n = svc.real_servers.len();
    host.in_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
            let (h, _task) = spawn(
                RunnerSettings {
                    max_concurrent: 1024,
                    seed: 1,
                },
                tx,
            );
            let up = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let up2 = up.clone();
            let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let failed2 = failed.clone();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    if let HealthEvent::Transition {
                        transition: Transition::Up { .. },
                        ..
                    } = ev
                    {
                        up2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let HealthEvent::Transition {
                        transition: Transition::Down { .. },
                        ..
                    } = ev
                    {
                        failed2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
            h.apply(vec![svc]).await.unwrap();
            tokio::time::sleep(warmup).await;
            let stats = h.stats();
            let (c0, s0, t0) = (cpu_time(), stats.borrow().finished, Instant::now());
            tokio::time::sleep(window).await;
            let (c1, s1, t1) = (cpu_time(), stats.borrow().finished, Instant::now());
            let st = *stats.borrow();
            let secs = (t1 - t0).as_secs_f64();
            Figures {
                cpu_pct: 100.0 * ((c1.0 + c1.1) - (c0.0 + c0.1)).as_secs_f64() / secs,
                sys_pct: 100.0 * (c1.1 - c0.1).as_secs_f64() / secs,
                per_s: (s1 - s0) as f64 / secs,
                rss_mib: rss_mib(),
                late: st.late,
                max_lag: st.max_start_lag,
                up: up.load(std::sync::atomic::Ordering::Relaxed).min(n),
                failed: failed.load(std::sync::atomic::Ordering::Relaxed),
            }
        })
    })
    .unwrap()
}

#[test]
#[ignore = "benchmark: make bench BENCH=health"]
fn health_bench() {
    let (lab, host) = lab();
    let conf = nginx_conf(&lab);
    let _nginx = host.spawn(["nginx", "-c", conf.to_str().unwrap()]).unwrap();
    let ready = host.in_netns(wait_listening).unwrap();
    assert!(ready, "nginx did not start in the lab");

    let tcp = CheckSpec {
        kind: CheckKind::Tcp,
        timing: Timing {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            ..Timing::default()
        },
        ..CheckSpec::default()
    };
    let f = measure(
        &host,
        service("tcp10k", N_TCP, tcp),
        Duration::from_secs(3),
        Duration::from_secs(10),
    );
    println!("BENCH health_tcp_10k_cpu_pct {:.1} %", f.cpu_pct);
    println!("BENCH health_tcp_10k_cpu_sys_pct {:.1} %", f.sys_pct);
    println!("BENCH health_tcp_10k_rss_mib {:.1} MiB", f.rss_mib);
    println!("BENCH health_tcp_10k_checks_per_s {:.0} checks/s", f.per_s);
    println!(
        "BENCH health_tcp_10k_max_start_lag_ms {:.1} ms",
        f.max_lag.as_secs_f64() * 1000.0
    );
    println!("BENCH health_tcp_10k_late_starts {} starts", f.late);
    println!("BENCH health_tcp_10k_failed {} checks", f.failed);
    assert_eq!(f.up, N_TCP as usize, "every real server came up");

    // HTTP: 1,000 real servers every 50 ms offer 20,000 checks/s, more than
    // one core does: the rate reached is the figure.
    let http = CheckSpec {
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
        timing: Timing {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            ..Timing::default()
        },
        connect_port: Some(8080),
        ..CheckSpec::default()
    };
    let f = measure(
        &host,
        service("http", N_HTTP, http),
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    println!("BENCH health_http_checks_per_s {:.0} checks/s", f.per_s);
    println!("BENCH health_http_cpu_pct {:.1} %", f.cpu_pct);
    assert_eq!(f.up, N_HTTP as usize, "every HTTP real server came up");
}
