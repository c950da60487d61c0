//! A tiny HTTP server and a bounded HTTP client for lab hosts.
//!
//! The server is `python3 -m http.server` serving one file, `/`, whose body is
//! the host's name and a newline: a client that fetches `/` learns which real
//! server answered. The client is `curl` with `--max-time`, run inside a host.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::lab::Host;
use crate::process::Proc;
use crate::wait::wait_for_ok;

/// How long a started server may take to listen (scaled, see [`crate::scaled`]).
const SERVER_START: Duration = Duration::from_secs(10);

/// Default `--max-time` of [`Host::http_get`] (scaled).
pub const HTTP_MAX_TIME: Duration = Duration::from_secs(5);

/// `http://ADDR:PORT/` with brackets around IPv6 addresses.
pub fn http_url(addr: IpAddr, port: u16) -> String {
    format!("http://{}/", SocketAddr::new(addr, port))
}

impl Host {
    /// Starts an HTTP server on `port` (all addresses, IPv4 and IPv6) whose
    /// `/` answers with this host's name and a newline. Returns once the
    /// server accepts connections; the guard stops it.
    pub fn http_server(&self, port: u16) -> Result<Proc> {
        let root = self.lab_dir().join(format!("www-{}", self.name()));
        let io = |what: &str, source| LabError::Io {
            what: format!("{what} {}", root.display()),
            source,
        };
        std::fs::create_dir_all(&root).map_err(|e| io("creating", e))?;
        std::fs::write(root.join("index.html"), format!("{}\n", self.name()))
            .map_err(|e| io("writing index.html in", e))?;
        let port_s = port.to_string();
        let argv = [
            OsStr::new("python3"),
            "-m".as_ref(),
            "http.server".as_ref(),
            port_s.as_ref(),
            // "::" makes it a dual-stack socket (IPv4 too).
            "--bind".as_ref(),
            "::".as_ref(),
            "--directory".as_ref(),
            root.as_os_str(),
        ];
        let mut server = self.spawn_cmd(self.command(argv), &format!("http-{port}"))?;
        let probe = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        wait_for_ok(
            || {
                server.check_running()?;
                self.in_netns(|| TcpStream::connect_timeout(&probe, Duration::from_millis(200)))?
                    .map(drop)
                    .map_err(|source| LabError::Io {
                        what: format!("connecting to {probe} in {}", self.name()),
                        source,
                    })
            },
            crate::scaled(SERVER_START),
        )?;
        Ok(server)
    }

    /// `GET url` from inside this host with curl, bounded by
    /// [`HTTP_MAX_TIME`]; returns the body. Fails (with curl's message) on
    /// connection errors, timeouts and HTTP error statuses.
    pub fn http_get(&self, url: &str) -> Result<String> {
        self.http_get_timeout(url, crate::scaled(HTTP_MAX_TIME))
    }

    /// Like [`Host::http_get`] with an explicit `--max-time`.
    pub fn http_get_timeout(&self, url: &str, max_time: Duration) -> Result<String> {
        let secs = format!("{:.3}", max_time.as_secs_f64());
        self.command([
            "curl",
            "-sS",
            "-f",
            "-g",
            "--noproxy",
            "*",
            "--max-time",
            &secs,
            url,
        ])
        .timeout(max_time + crate::scaled(Duration::from_secs(5)))
        .run_ok()
    }
}
