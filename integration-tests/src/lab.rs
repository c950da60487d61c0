//! A lab: a "switch" namespace with Linux bridges, and hosts (namespaces)
//! plugged into them with veth pairs.
//!
//! ```text
//!   netns lblab-<pid>-<n>-sw            netns lblab-<pid>-<n>-<host>
//!  +-------------------------+         +---------------------------+
//!  |  br-lan  <- p0-client ==|=========|== eth0  10.0.0.1/24 ...   |
//!  |          <- p1-dir    ==|===  ... |   lo                      |
//!  |  br-wan  (more segments)|         +---------------------------+
//!  +-------------------------+
//! ```
//!
//! Nothing is created in the root namespace: both ends of every veth are
//! created directly in their namespaces, the bridges live in the switch
//! namespace, and no real interface is ever enslaved. Names carry the test
//! process id so parallel tests never collide and labs left behind by a
//! crashed run can be swept ([`sweep_stale`]).
//!
//! Dropping the [`Lab`] kills every process left in its namespaces and
//! deletes them, also while a panic unwinds. Set `LB_LAB_KEEP=1` to keep a
//! lab for inspection (its names are printed).

use std::cell::Cell;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd::{Cmd, Output};
use crate::error::{LabError, Result};
use crate::netns::{in_netns, netns_path};
use crate::process::Proc;

/// Prefix of every namespace a lab creates.
pub const PREFIX: &str = "lblab-";

/// The segment (bridge) that [`Lab::host`] plugs hosts into.
pub const DEFAULT_SEGMENT: &str = "lan";

/// Longest host name: the switch-side port is `p<k>-<name>` and interface
/// names have 15 characters at most.
pub const MAX_HOST_NAME: usize = 10;

const IFNAMSIZ: usize = 15;

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A network lab owned by one test. See the module docs.
pub struct Lab {
    inner: Arc<LabInner>,
    /// Owned by the lab alone: removed when the lab drops, even while hosts
    /// (which only know its path) are still around.
    dir: tempfile::TempDir,
}

struct LabInner {
    test: String,
    tag: String,
    dir: PathBuf,
    switch: String,
    keep: bool,
    state: Mutex<LabState>,
}

#[derive(Default)]
struct LabState {
    /// Namespaces to delete, in creation order (the switch first).
    netns: Vec<String>,
    segments: Vec<String>,
    hosts: Vec<String>,
    /// Switch-side veth ends: (host, interface) -> port.
    ports: Vec<(String, String, String)>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("test", &self.inner.test)
            .field("tag", &self.inner.tag)
            .finish()
    }
}

impl Lab {
    /// A new, empty lab with its switch namespace and the default segment.
    /// `test` names the lab in messages and logs.
    ///
    /// The first lab of a process also sweeps labs left behind by dead
    /// processes.
    pub fn new(test: &str) -> Result<Lab> {
        let keep = std::env::var_os("LB_LAB_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        SWEEP.call_once(|| {
            if keep {
                // Someone is inspecting labs: leave the old ones alone too.
                return;
            }
            let swept = sweep_stale();
            if !swept.is_empty() {
                eprintln!("lb_lab: removed stale lab namespaces {swept:?}");
            }
        });
        let tag = format!(
            "{}-{}",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{tag}-"))
            .tempdir()
            .map_err(|source| LabError::Io {
                what: "creating the lab directory".into(),
                source,
            })?;
        if keep {
            dir.disable_cleanup(true);
        }
        let switch = format!("{PREFIX}{tag}-sw");
        let lab = Lab {
            inner: Arc::new(LabInner {
                test: test.to_string(),
                tag,
                dir: dir.path().to_path_buf(),
                switch: switch.clone(),
                keep,
                state: Mutex::default(),
            }),
            dir,
        };
        // From here on, Drop cleans up whatever was created if a step fails.
        lab.add_netns(&switch)?;
        // The switch is pure layer 2: no IPv6 link-local noise from bridges.
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            write_sysctl(&switch, key, "1")?;
        }
        lab.segment(DEFAULT_SEGMENT)?;
        crate::trace(|| format!("lab {test}: switch {switch}"));
        Ok(lab)
    }

    /// The test name given to [`Lab::new`].
    pub fn test_name(&self) -> &str {
        &self.inner.test
    }

    /// The name of the switch namespace.
    pub fn switch_netns(&self) -> &str {
        &self.inner.switch
    }

    /// A directory that lives as long as the lab (logs, served files, configs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a segment: a bridge `br-<name>` in the switch namespace, with STP
    /// and multicast snooping off so VRRP and neighbour discovery flood.
    pub fn segment(&self, name: &str) -> Result<()> {
        let bridge = bridge_name(name)?;
        let mut state = self.state();
        if state.segments.iter().any(|s| s == name) {
            return Err(LabError::Invalid {
                what: "segment name",
                value: name.into(),
                why: "exists already".into(),
            });
        }
        let sw = &self.inner.switch;
        ip(
            sw,
            [
                "link",
                "add",
                &bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        ip(sw, ["link", "set", &bridge, "up"])?;
        state.segments.push(name.to_string());
        Ok(())
    }

    /// A host on the default segment with interface `eth0` carrying `addrs`
    /// (CIDR, IPv4 or IPv6: `["10.0.0.1/24", "fd00::1/64"]`). IPv6 addresses
    /// are usable at once (no duplicate address detection).
    pub fn host(&self, name: &str, addrs: &[&str]) -> Result<Host> {
        let host = self.bare_host(name)?;
        self.attach(&host, "eth0", DEFAULT_SEGMENT, addrs)?;
        Ok(host)
    }

    /// A host with only `lo` (up); plug it in with [`Lab::attach`].
    pub fn bare_host(&self, name: &str) -> Result<Host> {
        validate_host_name(name)?;
        if self.state().hosts.iter().any(|h| h == name) {
            return Err(LabError::Invalid {
                what: "host name",
                value: name.into(),
                why: "exists already in this lab".into(),
            });
        }
        let netns = format!("{PREFIX}{}-{name}", self.inner.tag);
        self.add_netns(&netns)?;
        // No DAD: addresses added later are usable at once, link-local ones too.
        for key in [
            "net.ipv6.conf.all.accept_dad",
            "net.ipv6.conf.default.accept_dad",
        ] {
            write_sysctl(&netns, key, "0")?;
        }
        self.state().hosts.push(name.to_string());
        Ok(Host {
            inner: Arc::new(HostInner {
                name: name.to_string(),
                netns,
                lab: self.inner.clone(),
                addrs: Mutex::default(),
                spawned: AtomicU32::new(0),
            }),
        })
    }

    /// Plugs `host` into `segment` with a new interface `ifname` carrying
    /// `addrs`. The interface is up when this returns.
    pub fn attach(&self, host: &Host, ifname: &str, segment: &str, addrs: &[&str]) -> Result<()> {
        validate_ifname(ifname)?;
        let bridge = bridge_name(segment)?;
        let port = {
            let mut state = self.state();
            if !state.segments.iter().any(|s| s == segment) {
                return Err(LabError::Invalid {
                    what: "segment",
                    value: segment.into(),
                    why: format!("unknown (known: {})", state.segments.join(", ")),
                });
            }
            if state
                .ports
                .iter()
                .any(|(h, i, _)| h == host.name() && i == ifname)
            {
                return Err(LabError::Invalid {
                    what: "interface",
                    value: ifname.into(),
                    why: format!("host {} is already plugged in with it", host.name()),
                });
            }
            let mut port = format!("p{}-{}", state.ports.len(), host.name());
            port.truncate(IFNAMSIZ);
            state
                .ports
                .push((host.name().to_string(), ifname.to_string(), port.clone()));
            port
        };
        let sw = &self.inner.switch;
        ip(
            sw,
            [
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                ifname,
                "netns",
                host.netns(),
            ],
        )?;
        ip(sw, ["link", "set", &port, "master", &bridge, "up"])?;
        host.link_up(ifname)?;
        for addr in addrs {
            host.add_addr(ifname, addr)?;
        }
        Ok(())
    }

    /// Plugs the cable of `host`'s `ifname` out of the switch (`false`) or
    /// back in (`true`): the switch-side port goes down or up, so the host
    /// sees its carrier go (NO-CARRIER) while its interface stays
    /// administratively up, like a pulled cable.
    pub fn set_cable(&self, host: &Host, ifname: &str, connected: bool) -> Result<()> {
        let port = self
            .state()
            .ports
            .iter()
            .find(|(h, i, _)| h == host.name() && i == ifname)
            .map(|(_, _, p)| p.clone())
            .ok_or_else(|| LabError::Invalid {
                what: "interface",
                value: ifname.into(),
                why: format!("host {} has no such interface on the switch", host.name()),
            })?;
        ip(
            &self.inner.switch,
            ["link", "set", &port, if connected { "up" } else { "down" }],
        )
        .map(drop)
    }

    fn add_netns(&self, netns: &str) -> Result<()> {
        // Recorded first: a half-made namespace is deleted on drop too.
        self.state().netns.push(netns.to_string());
        // Another test may be changing how namespaces are born (for example
        // net.core.fb_tunnels_only_for_init_net); wait until it is done.
        let _shared = if EXCLUSIVE_CREATION.get() {
            None
        } else {
            Some(NETNS_CREATION.read().unwrap_or_else(|e| e.into_inner()))
        };
        Cmd::new(["ip", "netns", "add", netns]).run_ok()?;
        ip(netns, ["link", "set", "lo", "up"])?;
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LabState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Held shared while a namespace is created, exclusively by
/// [`with_exclusive_netns_creation`].
static NETNS_CREATION: RwLock<()> = RwLock::new(());

thread_local! {
    static EXCLUSIVE_CREATION: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` while no other thread of this process creates a namespace: for a
/// test that changes a machine-wide setting that applies to namespaces as they
/// are created, and puts it back before returning. Namespaces `f` itself
/// creates (on this thread) are not blocked.
pub fn with_exclusive_netns_creation<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            EXCLUSIVE_CREATION.set(false);
        }
    }
    let _exclusive = NETNS_CREATION.write().unwrap_or_else(|e| e.into_inner());
    EXCLUSIVE_CREATION.set(true);
    let _reset = Reset;
    f()
}

impl Drop for Lab {
    fn drop(&mut self) {
        let netns = std::mem::take(&mut self.state().netns);
        if self.inner.keep {
            eprintln!(
                "lb_lab: LB_LAB_KEEP is set, keeping lab {} of test {}: namespaces {netns:?}, dir {}",
                self.inner.tag,
                self.inner.test,
                self.dir().display()
            );
            return;
        }
        // Hosts first, the switch last.
        for ns in netns.iter().rev() {
            teardown_netns(ns);
        }
    }
}

/// A host of a lab: a network namespace. Cheap to clone; the namespace lives
/// until its [`Lab`] is dropped.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    name: String,
    netns: String,
    lab: Arc<LabInner>,
    /// (interface, address, prefix length) added through the lab.
    addrs: Mutex<Vec<(String, IpAddr, u8)>>,
    spawned: AtomicU32,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.inner.name)
            .field("netns", &self.inner.netns)
            .finish()
    }
}

impl Host {
    /// The host's name in the lab.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The network namespace's name (for `ip netns exec`, `ip -n`).
    pub fn netns(&self) -> &str {
        &self.inner.netns
    }

    /// The lab's directory (see [`Lab::dir`]).
    pub fn lab_dir(&self) -> &Path {
        &self.inner.lab.dir
    }

    /// The first IPv4 address given to this host through the lab.
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.addrs()
            .into_iter()
            .map(|(_, a, _)| a)
            .find(IpAddr::is_ipv4)
    }

    /// The first IPv6 address given to this host through the lab.
    pub fn ipv6(&self) -> Option<IpAddr> {
        self.addrs()
            .into_iter()
            .map(|(_, a, _)| a)
            .find(IpAddr::is_ipv6)
    }

    /// Addresses given through the lab: (interface, address, prefix length).
    pub fn addrs(&self) -> Vec<(String, IpAddr, u8)> {
        self.inner
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A command that runs inside this host (`ip netns exec`), to adjust
    /// (environment, timeout, stdin) before running or spawning it.
    pub fn command<I, S>(&self, argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Cmd::new(argv).prefixed(["ip", "netns", "exec", self.netns()])
    }

    /// Runs a command inside the host; a non-zero exit is returned, not an
    /// error (see [`Output::status`]).
    pub fn run<I, S>(&self, argv: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command(argv).run()
    }

    /// Runs a command inside the host; fails with its stderr unless it
    /// exits 0. Returns its stdout.
    pub fn run_ok<I, S>(&self, argv: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command(argv).run_ok()
    }

    /// Runs a shell script (`sh -c`) inside the host; fails unless it exits 0.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        self.run_ok(["sh", "-c", script])
    }

    /// `ip -n <netns> ARGS...`: cheaper than `run(["ip", ...])`.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        ip(self.netns(), args)
    }

    /// Starts a long-running command inside the host. Its output goes to a
    /// log file in the lab directory; the guard kills it when dropped.
    pub fn spawn<I, S>(&self, argv: I) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let argv: Vec<std::ffi::OsString> = argv.into_iter().map(|a| a.as_ref().into()).collect();
        let prog = argv
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.spawn_cmd(self.command(argv), &prog)
    }

    /// Starts tcpdump on `iface`, writing every frame that matches `filter`
    /// to `file` as it arrives (unbuffered, so a reader sees it at once).
    pub fn tcpdump(&self, iface: &str, file: &Path, filter: &str) -> Result<Proc> {
        let args: [&std::ffi::OsStr; 8] = [
            "tcpdump".as_ref(),
            "-i".as_ref(),
            iface.as_ref(),
            "-U".as_ref(),
            "--immediate-mode".as_ref(),
            "-w".as_ref(),
            file.as_os_str(),
            filter.as_ref(),
        ];
        self.spawn(args)
    }

    /// Starts a prepared [`Host::command`]; `label` names its log file.
    pub fn spawn_cmd(&self, cmd: Cmd, label: &str) -> Result<Proc> {
        let n = self.inner.spawned.fetch_add(1, Ordering::Relaxed);
        let log = self
            .lab_dir()
            .join(format!("{}-{n}-{label}.log", self.name()));
        let child = cmd.spawn_logged(&log)?;
        Ok(Proc::new(child, cmd.display(), log))
    }

    /// Runs `f` on a thread inside this host's namespace (see [`in_netns`]):
    /// sockets it opens belong to the host.
    pub fn in_netns<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        in_netns(self.netns(), f)
    }

    /// Adds an address (CIDR) to an interface of the host (`lo` for a VIP
    /// on loopback). IPv6 addresses skip duplicate address detection.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let (addr, prefix) = parse_cidr(cidr)?;
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ip(args)?;
        self.inner
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ifname.to_string(), addr, prefix));
        Ok(())
    }

    /// Removes an address (CIDR) from an interface of the host.
    pub fn del_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let (addr, prefix) = parse_cidr(cidr)?;
        self.ip(["addr", "del", cidr, "dev", ifname])?;
        self.inner
            .addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, a, p)| !(i == ifname && *a == addr && *p == prefix));
        Ok(())
    }

    /// Whether any interface of the host carries `addr` now (as the kernel
    /// sees it, e.g. a VIP that a VRRP master added).
    pub fn has_addr(&self, addr: &str) -> Result<bool> {
        let want: IpAddr = addr.parse().map_err(|_| LabError::Invalid {
            what: "address",
            value: addr.into(),
            why: "not an IP address".into(),
        })?;
        // `ip -o addr`: "2: eth0    inet 10.0.0.1/24 brd ... scope global eth0 ..."
        let out = self.ip(["-o", "addr", "show"])?;
        Ok(out.lines().any(|line| {
            line.split_whitespace()
                .nth(3)
                .and_then(|cidr| cidr.split('/').next())
                .and_then(|a| a.parse::<IpAddr>().ok())
                == Some(want)
        }))
    }

    /// The MAC address of an interface of the host.
    pub fn mac(&self, ifname: &str) -> Result<String> {
        let out = self.ip(["-o", "link", "show", "dev", ifname])?;
        let mut words = out.split_whitespace();
        words.find(|w| w.starts_with("link/"));
        words
            .next()
            .map(str::to_string)
            .ok_or_else(|| LabError::Invalid {
                what: "interface",
                value: ifname.into(),
                why: format!("no link-layer address in `{}`", out.trim()),
            })
    }

    /// Sets an interface up or down (a "link down on the master" test).
    pub fn set_link(&self, ifname: &str, up: bool) -> Result<()> {
        self.ip(["link", "set", ifname, if up { "up" } else { "down" }])
            .map(drop)
    }

    /// `ip link set IFNAME up`.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.set_link(ifname, true)
    }

    /// `ip link set IFNAME down`.
    pub fn link_down(&self, ifname: &str) -> Result<()> {
        self.set_link(ifname, false)
    }

    /// Reads a sysctl of this host (`net.ipv4.conf.all.arp_ignore`), trimmed.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        read_sysctl(self.netns(), key)
    }

    /// Writes a sysctl of this host.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        write_sysctl(self.netns(), key, value)
    }
}

/// `ip -n NETNS ARGS...`, failing with stderr.
fn ip<I, S>(netns: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Cmd::new(args).prefixed(["ip", "-n", netns]).run_ok()
}

fn sysctl_path(key: &str) -> PathBuf {
    if key.contains('/') {
        // Already a path below /proc/sys (for interface names with dots).
        Path::new("/proc/sys").join(key.trim_start_matches("/proc/sys/"))
    } else {
        Path::new("/proc/sys").join(key.replace('.', "/"))
    }
}

fn read_sysctl(netns: &str, key: &str) -> Result<String> {
    let path = sysctl_path(key);
    in_netns(netns, || std::fs::read_to_string(&path))?
        .map(|v| v.trim().to_string())
        .map_err(|source| LabError::Io {
            what: format!("reading sysctl {key} in {netns}"),
            source,
        })
}

fn write_sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key);
    in_netns(netns, || std::fs::write(&path, value))?.map_err(|source| LabError::Io {
        what: format!("writing sysctl {key}={value} in {netns}"),
        source,
    })
}

fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8)> {
    let invalid = |why: &str| LabError::Invalid {
        what: "address",
        value: cidr.into(),
        why: why.into(),
    };
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| invalid("expected ADDRESS/PREFIX"))?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid("not an IP address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(invalid("prefix length too long"));
    }
    Ok((addr, prefix))
}

fn validate_host_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_HOST_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name != "sw";
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid {
            what: "host name",
            value: name.into(),
            why: format!("use 1-{MAX_HOST_NAME} characters of a-z, 0-9 and '-' (not \"sw\")"),
        })
    }
}

fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > IFNAMSIZ || name.contains(['/', ' ', ':']) {
        return Err(LabError::Invalid {
            what: "interface name",
            value: name.into(),
            why: format!("use 1-{IFNAMSIZ} characters without '/', ':' or spaces"),
        });
    }
    Ok(())
}

fn bridge_name(segment: &str) -> Result<String> {
    let bridge = format!("br-{segment}");
    if bridge.len() > IFNAMSIZ
        || !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(LabError::Invalid {
            what: "segment name",
            value: segment.into(),
            why: format!("use 1-{} characters of a-z, 0-9 and '-'", IFNAMSIZ - 3),
        });
    }
    Ok(bridge)
}

/// Kills every process inside `netns` and deletes it. Best effort, bounded:
/// failures are printed, never raised (this runs in Drop).
fn teardown_netns(netns: &str) {
    if !netns_path(netns).exists() {
        return;
    }
    for _ in 0..50 {
        let pids = match Cmd::new(["ip", "netns", "pids", netns]).run_ok() {
            Ok(out) => out
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .filter(|p| *p > 1)
                .collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = Cmd::new(["ip", "netns", "del", netns]).run_ok() {
        eprintln!("lb_lab: teardown of {netns}: {e}");
    }
}

/// Deletes lab namespaces (and lab directories in the temp dir) whose
/// creating process is gone, left behind by a run that was killed. Returns
/// the namespaces removed. Labs of live processes are never touched.
pub fn sweep_stale() -> Vec<String> {
    let mut swept = Vec::new();
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return swept;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if owner_is_gone(&name) {
            teardown_netns(&name);
            swept.push(name);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_is_gone(&name) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    swept
}

/// For `lblab-<pid>-...`: whether process `pid` no longer exists.
fn owner_is_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("10.0.0.1/24").unwrap(),
            ("10.0.0.1".parse().unwrap(), 24)
        );
        assert_eq!(
            parse_cidr("fd00::1/64").unwrap(),
            ("fd00::1".parse().unwrap(), 64)
        );
        assert!(parse_cidr("10.0.0.1").is_err());
        assert!(parse_cidr("10.0.0.1/33").is_err());
        assert!(parse_cidr("fd00::1/129").is_err());
        assert!(parse_cidr("nope/8").is_err());
    }

    #[test]
    fn names_fit_interface_limits() {
        assert!(validate_host_name("client").is_ok());
        assert!(validate_host_name("rs-1").is_ok());
        assert!(validate_host_name("abcdefghijk").is_err());
        assert!(validate_host_name("Client").is_err());
        assert!(validate_host_name("").is_err());
        assert!(validate_host_name("sw").is_err());
        assert_eq!(bridge_name("lan").unwrap(), "br-lan");
        assert!(bridge_name("a-very-long-one").is_err());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a-very-long-name").is_err());
    }

    #[test]
    fn sysctl_keys_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.all.arp_ignore"),
            Path::new("/proc/sys/net/ipv4/conf/all/arp_ignore")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/arp_ignore"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/arp_ignore")
        );
    }

    #[test]
    fn only_dead_owners_are_swept() {
        let me = std::process::id();
        assert!(!owner_is_gone(&format!("{PREFIX}{me}-0-sw")));
        assert!(!owner_is_gone("someone-else"));
        assert!(!owner_is_gone(&format!("{PREFIX}1-0-sw")), "pid 1 is alive");
        // Pids above pid_max cannot exist.
        assert!(owner_is_gone(&format!("{PREFIX}4294967294-0-sw")));
    }
}
