//! Health-check benchmark (ignored by `cargo test`; `make bench BENCH=health`
//! runs it): 10,000 TCP checks at a 1 s interval against 10,000 listeners on
//! 10,000 addresses of one interface of one lab host, and HTTP checks against
//! the same nginx. The runner runs on one thread (a current-thread
//! tokio runtime inside the lab's network namespace), so its CPU time is the
//! cost "at one core".
//!
//! On loopback the listeners' side of every handshake (SYN received, SYN-ACK
//! sent, the child socket queued, the RST taken down) runs in the sending
//! thread's softirq and counts as *our* system time: `health_tcp_10k_cpu_pct`
//! includes it. The `_veth` figures run the same 10,000 checks from a second
//! host over a veth pair whose two ends have threaded NAPI: each
//! side's receive processing runs in a kernel thread of its own
//! (`napi/<ifname>-<id>`), measured apart from the runner's thread.
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
    lab_named("health-bench")
}

fn lab_named(name: &str) -> (Lab, Host) {
    let lab = Lab::new(name).unwrap();
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

/// Interfaces of the veth pair of the `_veth` figures.
const VETH_CHECKER: &str = "hbchk0";
const VETH_RS: &str = "hbrs0";

/// The `_veth` lab: the real-server host as in [`lab`], and a checker host
/// joined to it by a veth pair (10.78.0.1 - 10.78.0.2) whose two ends have
/// threaded NAPI, with a route to the real-server addresses. veth hands a
/// packet to the peer's NAPI only with GRO on at the receiver and, for a
/// TCP socket's packets, TSO off at the sender; otherwise the receive path
/// runs in the sender's softirq as on loopback.
fn veth_lab() -> (Lab, Host, Host) {
    let (lab, rs) = lab_named("health-bench-veth");
    let checker = lab.bare_host("chk").unwrap();
    checker
        .ip([
            "link",
            "add",
            VETH_CHECKER,
            "type",
            "veth",
            "peer",
            "name",
            VETH_RS,
            "netns",
            rs.netns(),
        ])
        .unwrap();
    for (host, ifname, cidr) in [
        (&checker, VETH_CHECKER, "10.78.0.1/30"),
        (&rs, VETH_RS, "10.78.0.2/30"),
    ] {
        host.ip(["addr", "add", cidr, "dev", ifname]).unwrap();
        host.ip(["link", "set", ifname, "up"]).unwrap();
        host.run_ok(["ethtool", "-K", ifname, "gro", "on", "tso", "off"])
            .unwrap();
        host.sh_ok(&format!("echo 1 > /sys/class/net/{ifname}/threaded"))
            .unwrap();
    }
    checker
        .ip(["route", "add", "10.77.0.0/18", "via", "10.78.0.2"])
        .unwrap();
    (lab, rs, checker)
}

/// Process id of the NAPI kernel thread of interface `ifname`.
fn napi_thread(ifname: &str) -> u32 {
    let prefix = format!("napi/{ifname}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("no NAPI thread for {ifname}"))
}

/// CPU time (user + system) of process `pid`, from /proc (clock ticks of 10 ms).
fn proc_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime is the 14th field.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    Duration::from_millis(10 * (f[0] + f[1]))
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
    /// CPU of each of the `others` processes over the window, in % of one core.
    others_pct: Vec<f64>,
}

/// Runs `svc` on a one-thread runtime in the lab for `warmup + window`;
/// measures over the window, the CPU of the processes `others` too.
fn measure(
    host: &Host,
    svc: ServiceSpec,
    warmup: Duration,
    window: Duration,
    others: &[u32],
) -> Figures {
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
            let o0: Vec<_> = others.iter().map(|p| proc_cpu_time(*p)).collect();
            let (c0, s0, t0) = (cpu_time(), stats.borrow().finished, Instant::now());
            tokio::time::sleep(window).await;
            let (c1, s1, t1) = (cpu_time(), stats.borrow().finished, Instant::now());
            let o1: Vec<_> = others.iter().map(|p| proc_cpu_time(*p)).collect();
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
                others_pct: o0
                    .iter()
                    .zip(&o1)
                    .map(|(a, b)| 100.0 * (*b - *a).as_secs_f64() / secs)
                    .collect(),
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

    let f = measure(
        &host,
        service("tcp10k", N_TCP, tcp_check()),
        Duration::from_secs(3),
        Duration::from_secs(10),
        &[],
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
        &[],
    );
    println!("BENCH health_http_checks_per_s {:.0} checks/s", f.per_s);
    println!("BENCH health_http_cpu_pct {:.1} %", f.cpu_pct);
    assert_eq!(f.up, N_HTTP as usize, "every HTTP real server came up");
}

fn tcp_check() -> CheckSpec {
    CheckSpec {
        kind: CheckKind::Tcp,
        timing: Timing {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            ..Timing::default()
        },
        ..CheckSpec::default()
    }
}

// The 10,000 TCP checks of `health_bench` from a host of their own over a
// veth pair with threaded NAPI: the runner's thread, the checker side's
// receive path and the listeners' side, each measured apart.
#[test]
#[ignore = "benchmark: make bench BENCH=health"]
fn health_bench_veth() {
    let (lab, rs, checker) = veth_lab();
    let conf = nginx_conf(&lab);
    let _nginx = rs.spawn(["nginx", "-c", conf.to_str().unwrap()]).unwrap();
    let ready = checker.in_netns(wait_listening).unwrap();
    assert!(ready, "nginx did not start in the lab");
    let napi = [napi_thread(VETH_CHECKER), napi_thread(VETH_RS)];
    let f = measure(
        &checker,
        service("tcp10k", N_TCP, tcp_check()),
        Duration::from_secs(3),
        Duration::from_secs(10),
        &napi,
    );
    println!("BENCH health_tcp_10k_cpu_pct_veth {:.1} %", f.cpu_pct);
    println!("BENCH health_tcp_10k_cpu_sys_pct_veth {:.1} %", f.sys_pct);
    println!(
        "BENCH health_tcp_10k_checker_napi_pct_veth {:.1} %",
        f.others_pct[0]
    );
    println!(
        "BENCH health_tcp_10k_listener_napi_pct_veth {:.1} %",
        f.others_pct[1]
    );
    println!(
        "BENCH health_tcp_10k_checks_per_s_veth {:.0} checks/s",
        f.per_s
    );
    println!("BENCH health_tcp_10k_failed_veth {} checks", f.failed);
    assert_eq!(f.up, N_TCP as usize, "every real server came up");
}
