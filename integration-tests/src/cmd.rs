//! Running external commands with a time limit.
//!
//! Every command gets its own process group so that a timeout kills it and
//! everything it started (a shell's children, `ip netns exec`'s target), and
//! its output is collected by reader threads so a chatty command never blocks
//! on a full pipe.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{LabError, Result};

/// Default limit for one command: generous, because under emulation (the
/// VM) everything is 10-30 times slower. Scaled by [`crate::scaled`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long to wait for the output pipes to close after the command exited
/// (a background grandchild may hold them open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What a finished command returned.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmd: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout, lossily decoded.
    pub stdout: String,
    /// Its stderr, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The output if the command succeeded, [`LabError::Failed`] otherwise.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            Err(LabError::Failed {
                status: describe_status(self.status),
                cmd: self.cmd,
                stdout: self.stdout,
                stderr: self.stderr.trim_end().to_string(),
            })
        }
    }
}

/// "exit code 3" or "killed by signal 9".
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// A command line with its environment and time limit, ready to run or
/// spawn. Built by [`crate::Host::command`] or [`Cmd::new`].
#[derive(Clone)]
pub struct Cmd {
    argv: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl Cmd {
    /// A command in the current namespace. `argv` must not be empty.
    pub fn new<I, S>(argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Cmd {
            argv: argv
                .into_iter()
                .map(|a| a.as_ref().to_os_string())
                .collect(),
            envs: Vec::new(),
            timeout: crate::scaled(DEFAULT_TIMEOUT),
            stdin: None,
        }
    }

    /// Puts `prefix` (e.g. `ip netns exec NAME`) in front of the command.
    pub(crate) fn prefixed<I, S>(mut self, prefix: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv: Vec<OsString> = prefix
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        argv.append(&mut self.argv);
        self.argv = argv;
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.argv.push(arg.as_ref().to_os_string());
        self
    }

    /// Appends arguments (handy to mix paths and strings).
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.argv
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.envs.push((key.as_ref().into(), value.as_ref().into()));
        self
    }

    /// Replaces the time limit (not scaled: pass `scaled(d)` if wanted).
    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// Feeds these bytes on stdin (default: stdin is /dev/null).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(input.into());
        self
    }

    /// The command line as one string, for messages.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| {
                let a = a.to_string_lossy();
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("'{}'", a.replace('\'', "'\\''"))
                } else {
                    a.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self) -> Result<Command> {
        let Some((prog, args)) = self.argv.split_first() else {
            return Err(LabError::Invalid {
                what: "command",
                value: String::new(),
                why: "empty argument list".into(),
            });
        };
        let mut c = Command::new(prog);
        c.args(args).process_group(0);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        Ok(c)
    }

    /// Runs the command to its end (or its time limit). A non-zero exit is
    /// not an error here: look at [`Output::status`] or use [`Cmd::run_ok`].
    pub fn run(&self) -> Result<Output> {
        let cmd = self.display();
        crate::trace(|| format!("run: {cmd}"));
        let mut c = self.command()?;
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|source| LabError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
        if let (Some(input), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
            // A writer thread: a command that does not read its stdin must not
            // block us. Errors (EPIPE) are the command's business.
            thread::spawn(move || {
                let _ = std::io::Write::write_all(&mut pipe, &input);
            });
        }
        let (done_tx, done_rx) = mpsc::channel();
        let out = reader(child.stdout.take(), done_tx.clone());
        let err = reader(child.stderr.take(), done_tx);

        let deadline = Instant::now() + self.timeout;
        let status = match wait_deadline(&mut child, deadline) {
            Some(status) => status,
            None => {
                kill_group(child.id(), Signal::SIGKILL);
                let _ = child.wait();
                drain(&done_rx, Instant::now() + DRAIN_GRACE);
                return Err(LabError::Timeout {
                    cmd,
                    timeout: self.timeout,
                    stderr: take(&err).trim_end().to_string(),
                });
            }
        };
        drain(&done_rx, Instant::now() + DRAIN_GRACE);
        let output = Output {
            cmd,
            status,
            stdout: take(&out),
            stderr: take(&err),
        };
        crate::trace(|| format!("  -> {}", describe_status(status)));
        Ok(output)
    }

    /// Runs the command and fails with its stderr unless it exits 0;
    /// returns its stdout.
    pub fn run_ok(&self) -> Result<String> {
        Ok(self.run()?.ok()?.stdout)
    }

    /// Starts the command in the background with stdout and stderr going to
    /// `log`. The returned child leads its own process group.
    pub(crate) fn spawn_logged(&self, log: &std::path::Path) -> Result<Child> {
        let cmd = self.display();
        crate::trace(|| format!("spawn: {cmd} (log {})", log.display()));
        let io_err = |source| LabError::Io {
            what: format!("opening log {}", log.display()),
            source,
        };
        let file = std::fs::File::create(log).map_err(io_err)?;
        let file2 = file.try_clone().map_err(io_err)?;
        let mut c = self.command()?;
        c.stdin(Stdio::null()).stdout(file).stderr(file2);
        c.spawn().map_err(|source| LabError::Spawn { cmd, source })
    }
}

type Shared = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

fn reader<R: Read + Send + 'static>(pipe: Option<R>, done_tx: mpsc::Sender<()>) -> Shared {
    let buf: Shared = Default::default();
    let sink = buf.clone();
    thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        }
        let _ = done_tx.send(());
    });
    buf
}

fn drain(done_rx: &mpsc::Receiver<()>, deadline: Instant) {
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            return;
        }
    }
}

fn take(buf: &Shared) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Polls `child` until it exits or `deadline` passes (then `None`).
pub(crate) fn wait_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // ECHILD: someone else reaped it; report it as killed.
            Err(_) => return Some(ExitStatus::from_raw(libc::SIGKILL)),
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Sends `signal` to the process group led by `pid`; errors (already gone)
/// are ignored.
pub(crate) fn kill_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}
