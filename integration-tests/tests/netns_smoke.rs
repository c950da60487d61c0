//! Smoke tests of the netns lab on the host kernel: hosts on the lab bridge
//! reach each other over IPv4 and IPv6, HTTP works between them, and a lab
//! leaves nothing behind when it is dropped, also after a panic.
//!
//! Needs root (network namespaces). Traffic stays inside the lab's namespaces.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use lb_lab::{Lab, LabError, http_url, scaled, wait_for};

/// One ping, waiting up to 3 s (scaled) for the answer.
fn ping(from: &lb_lab::Host, to: &str) -> lb_lab::Result<lb_lab::Output> {
    let wait = scaled(Duration::from_secs(3)).as_secs().max(1).to_string();
    from.run(["ping", "-n", "-c", "1", "-W", &wait, to])
}

/// Whether one ping, waiting 1 s, gets no answer (for paths that must be cut).
fn ping_fails(from: &lb_lab::Host, to: &str) -> lb_lab::Result<bool> {
    Ok(!from
        .run(["ping", "-n", "-c", "1", "-W", "1", to])?
        .success())
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// A process is gone once its pid is free or it is a zombie waiting for init.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn hosts_ping_each_other_over_ipv4_and_ipv6() -> Result<()> {
    let lab = Lab::new("ping")?;
    let a = lab.host("a", &["10.0.0.1/24", "fd00::1/64"])?;
    let b = lab.host("b", &["10.0.0.2/24", "fd00::2/64"])?;
    for (from, to) in [
        (&a, "10.0.0.2"),
        (&b, "10.0.0.1"),
        (&a, "fd00::2"),
        (&b, "fd00::1"),
    ] {
        ping(from, to)?.ok()?;
    }
    // An address nobody has does not answer: the check above can fail.
    assert!(
        ping_fails(&a, "10.0.0.3")?,
        "ping to an absent host succeeded"
    );
    Ok(())
}

#[test]
fn http_between_hosts_over_ipv4_and_ipv6() -> Result<()> {
    let lab = Lab::new("http")?;
    let client = lab.host("client", &["10.0.1.1/24", "fd00:1::1/64"])?;
    let server = lab.host("server", &["10.0.1.2/24", "fd00:1::2/64"])?;
    let _http = server.http_server(8080)?;
    for addr in [server.ipv4().unwrap(), server.ipv6().unwrap()] {
        let body = client.http_get(&http_url(addr, 8080))?;
        assert_eq!(body, "server\n");
    }
    // Nothing listens on another port: the client reports the failure.
    let err = client
        .http_get(&http_url(server.ipv4().unwrap(), 8081))
        .unwrap_err();
    assert!(err.to_string().contains("curl"), "{err}");
    Ok(())
}

#[test]
fn sockets_opened_in_netns_carry_traffic() -> Result<()> {
    let lab = Lab::new("socket")?;
    let a = lab.host("a", &["10.0.2.1/24"])?;
    let b = lab.host("b", &["10.0.2.2/24"])?;
    // 10.0.2.1 exists only in host a: binding it works there and nowhere else.
    assert!(
        TcpListener::bind("10.0.2.1:0").is_err(),
        "lab address leaked into the test's namespace"
    );
    let listener = a.in_netns(|| TcpListener::bind("10.0.2.1:0"))??;
    let port = listener.local_addr()?.port();
    let server = std::thread::spawn(move || -> std::io::Result<String> {
        let (mut conn, peer) = listener.accept()?;
        let mut request = [0u8; 1024];
        let n = conn.read(&mut request)?;
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")?;
        Ok(format!(
            "{} {}",
            peer.ip(),
            String::from_utf8_lossy(&request[..n])
        ))
    });
    let body = b.http_get(&format!("http://10.0.2.1:{port}/x"))?;
    assert_eq!(body, "hello\n");
    let seen = server.join().expect("server thread")?;
    assert!(seen.starts_with("10.0.2.2 GET /x"), "{seen}");
    Ok(())
}

#[test]
fn threads_started_in_netns_stay_there() -> Result<()> {
    let lab = Lab::new("threads")?;
    let a = lab.host("a", &["10.0.9.1/24"])?;
    let worker = a.in_netns(|| std::thread::spawn(|| TcpListener::bind("10.0.9.1:0").map(drop)))?;
    worker.join().expect("worker thread")?;
    Ok(())
}

#[test]
fn pulled_cable_drops_carrier() -> Result<()> {
    let lab = Lab::new("cable")?;
    let a = lab.host("a", &["10.0.10.1/24"])?;
    let b = lab.host("b", &["10.0.10.2/24"])?;
    lab.set_cable(&b, "eth0", false)?;
    let link = b.ip(["link", "show", "eth0"])?;
    assert!(
        link.contains("NO-CARRIER") && link.contains(",UP"),
        "{link}"
    );
    assert!(ping_fails(&a, "10.0.10.2")?, "ping crossed a pulled cable");
    lab.set_cable(&b, "eth0", true)?;
    wait_for(
        || ping(&a, "10.0.10.2").is_ok_and(|o| o.success()),
        scaled(Duration::from_secs(10)),
    )?;
    assert!(lab.set_cable(&b, "eth9", false).is_err());
    Ok(())
}

#[test]
fn sysctls_are_per_host_and_links_go_down() -> Result<()> {
    let lab = Lab::new("sysctl")?;
    let a = lab.host("a", &["10.0.3.1/24"])?;
    let b = lab.host("b", &["10.0.3.2/24"])?;
    a.set_sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
    assert_eq!(a.sysctl("net.ipv4.conf.all.arp_ignore")?, "1");
    assert_eq!(b.sysctl("net.ipv4.conf.all.arp_ignore")?, "0");
    assert_eq!(a.sysctl("net.ipv6.conf.eth0.accept_dad")?, "0");

    b.link_down("eth0")?;
    assert!(
        ping_fails(&a, "10.0.3.2")?,
        "ping went through a link that is down"
    );
    b.link_up("eth0")?;
    wait_for(
        || ping(&a, "10.0.3.2").is_ok_and(|o| o.success()),
        scaled(Duration::from_secs(10)),
    )?;

    // More addresses later, on lo too (a VIP on loopback).
    b.add_addr("lo", "10.0.3.100/32")?;
    assert!(
        b.ip(["-4", "addr", "show", "dev", "lo"])?
            .contains("10.0.3.100/32")
    );
    assert!(b.has_addr("10.0.3.100")? && !a.has_addr("10.0.3.100")?);
    assert!(b.has_addr("10.0.3.2")? && !b.has_addr("10.0.3.22")?);
    b.del_addr("lo", "10.0.3.100/32")?;
    assert!(!b.has_addr("10.0.3.100")?);
    let mac = b.mac("eth0")?;
    assert!(mac.len() == 17 && mac != a.mac("eth0")?, "{mac}");
    assert!(
        !b.ip(["-4", "addr", "show", "dev", "lo"])?
            .contains("10.0.3.100")
    );
    Ok(())
}

#[test]
fn second_segment_is_separate() -> Result<()> {
    let lab = Lab::new("segments")?;
    lab.segment("wan")?;
    let router = lab.host("router", &["10.0.4.1/24"])?;
    lab.attach(&router, "eth1", "wan", &["10.0.5.1/24"])?;
    let inside = lab.host("inside", &["10.0.4.2/24"])?;
    let outside = lab.bare_host("outside")?;
    lab.attach(&outside, "eth0", "wan", &["10.0.5.2/24"])?;
    ping(&inside, "10.0.4.1")?.ok()?;
    ping(&outside, "10.0.5.1")?.ok()?;
    // Same subnet number on the other segment would not help: "inside" has no
    // route to 10.0.5.0/24, and the segments share no wire.
    assert!(ping_fails(&inside, "10.0.5.2")?);
    Ok(())
}

#[test]
fn errors_carry_command_and_stderr_and_commands_are_bounded() -> Result<()> {
    let lab = Lab::new("errors")?;
    let a = lab.host("a", &["10.0.6.1/24"])?;
    let err = a
        .run_ok(["ip", "link", "set", "nosuchdev", "up"])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ip link set nosuchdev up") && msg.contains("nosuchdev"),
        "{msg}"
    );
    assert!(matches!(err, LabError::Failed { .. }), "{err:?}");

    let start = Instant::now();
    let err = a
        .command(["sleep", "30"])
        .timeout(Duration::from_millis(300))
        .run()
        .unwrap_err();
    assert!(matches!(err, LabError::Timeout { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "timeout took {:?}",
        start.elapsed()
    );

    assert!(
        matches!(lab.host("a", &[]), Err(LabError::Invalid { .. })),
        "duplicate host"
    );
    assert!(matches!(
        lab.host("much-too-long", &[]),
        Err(LabError::Invalid { .. })
    ));
    Ok(())
}

#[test]
fn spawned_processes_stop_on_signal_and_on_drop() -> Result<()> {
    let lab = Lab::new("procs")?;
    let a = lab.host("a", &[])?;
    let mut term = a.spawn(["sleep", "600"])?;
    assert!(term.is_running());
    let status = term.terminate(scaled(Duration::from_secs(5)));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );

    let mut killed = a.spawn(["sh", "-c", "echo started; exec sleep 600"])?;
    wait_for(
        || killed.log().contains("started"),
        scaled(Duration::from_secs(5)),
    )?;
    let status = killed.kill();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let dropped = a.spawn(["sleep", "600"])?;
    let pid = dropped.pid();
    drop(dropped);
    assert!(process_gone(pid), "pid {pid} survived its guard");
    Ok(())
}

#[test]
fn teardown_removes_namespaces_and_processes() -> Result<()> {
    let lab = Lab::new("teardown")?;
    let a = lab.host("a", &["10.0.7.1/24"])?;
    let b = lab.host("b", &["10.0.7.2/24"])?;
    // A process no guard knows about: the lab must kill it.
    let orphan: u32 = a
        .sh_ok("sleep 600 >/dev/null 2>&1 & echo $!")?
        .trim()
        .parse()?;
    let names = [
        lab.switch_netns().to_string(),
        a.netns().to_string(),
        b.netns().to_string(),
    ];
    let dir = lab.dir().to_path_buf();
    assert!(names.iter().all(|n| netns_exists(n)) && dir.exists());
    drop(lab);
    for n in &names {
        assert!(!netns_exists(n), "{n} survived the lab");
    }
    assert!(!dir.exists(), "lab directory survived");
    wait_for(|| process_gone(orphan), scaled(Duration::from_secs(5)))?;
    // Handles that outlive the lab fail cleanly.
    assert!(a.run(["true"]).is_ok_and(|o| !o.success()));
    Ok(())
}

#[test]
fn teardown_happens_after_a_panic() {
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::new("panic").unwrap();
        let a = lab.host("a", &["10.0.8.1/24"]).unwrap();
        names
            .lock()
            .unwrap()
            .extend([lab.switch_netns().to_string(), a.netns().to_string()]);
        panic!("test body fails");
    });
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(!netns_exists(n), "{n} survived a panicking test");
    }
}

#[test]
fn stale_labs_of_dead_processes_are_swept() -> Result<()> {
    // A pid above any pid_max: its owner is certainly gone.
    let stale = format!("{}4294967294-0-sw", lb_lab::lab::PREFIX);
    lb_lab::Cmd::new(["ip", "netns", "add", &stale]).run_ok()?;
    let swept = lb_lab::sweep_stale();
    let still_there = netns_exists(&stale);
    if still_there {
        let _ = lb_lab::Cmd::new(["ip", "netns", "del", &stale]).run();
    }
    assert!(swept.contains(&stale) && !still_there, "{swept:?}");
    Ok(())
}
