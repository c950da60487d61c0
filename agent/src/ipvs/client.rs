//! The IPVS generic-netlink socket: requests out, replies and
//! acknowledgements in.
//!
//! ```text
//!   async callers --IpvsHandle::run(job)--> [job_tx] --> "ipvs-netlink" thread
//!                 <------- oneshot result -------------    owns IpvsSocket
//!                                                            | sendmsg: a batch of requests
//!                                                            v
//!                                                          kernel (genl "IPVS")
//! ```
//!
//! One thread owns the socket, so requests never interleave. Writes are
//! pipelined: a batch of requests goes out in one `sendmsg`, each with
//! `NLM_F_ACK` and its own sequence number, and then the acknowledgements
//! are collected; the kernel handles every message of the batch even when
//! one fails. Dumps take one request each (a netlink socket runs one dump at
//! a time): all services in one, the destinations of a service in one.
//!
//! Netlink framing and the socket come from `neli`; the IPVS attributes
//! from [`super::codec`].

use std::io::Cursor;
use std::sync::mpsc;

use neli::consts::genl::{CtrlAttr, CtrlCmd};
use neli::consts::nl::NlmF;
use neli::consts::socket::NlFamily;
use neli::genl::Genlmsghdr;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::socket::NlSocket;
use neli::types::Buffer;
use neli::utils::Groups;
use neli::{FromBytes, FromBytesWithInput, ToBytes};

use super::codec::{self, DecodeError, Reply, Request};
use super::model::{Daemon, DaemonState, DestEntry, Info, ServiceEntry, ServiceKey, Timeouts};
use super::reconcile::{IpvsOp, ServiceState, Table};
use super::validate::scheduler_module;

/// `GENL_ID_CTRL`.
const GENL_ID_CTRL: u16 = 0x10;
/// `NLMSG_DONE`.
const NLMSG_DONE: u16 = 3;
/// Requests per `sendmsg`: their acknowledgements must fit the receive
/// buffer, or the kernel drops them.
const BATCH: usize = 128;
/// Receive buffer asked of the kernel (it caps it at `net.core.rmem_max`).
const RCVBUF: usize = 4 << 20;
/// One datagram: a dump part is at most 32 KiB plus headers.
const DATAGRAM: usize = 64 << 10;

/// Something the IPVS socket could not do.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The socket failed.
    #[error("IPVS netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The IPVS family is not registered.
    #[error("the kernel has no IPVS generic netlink family; load it with `modprobe ip_vs`")]
    NoFamily,
    /// neli could not frame or parse a netlink message.
    #[error("IPVS netlink framing: {0}")]
    Framing(String),
    /// A reply's attributes could not be decoded.
    #[error("IPVS reply: {0}")]
    Decode(#[from] DecodeError),
    /// The kernel refused a request.
    #[error("{request}: {}{hint}", std::io::Error::from_raw_os_error(*.errno))]
    Kernel {
        /// What was asked, in words.
        request: String,
        /// The errno.
        errno: i32,
        /// What to do about it.
        hint: String,
    },
    /// The kernel never answered a request of a batch.
    #[error("{request}: no acknowledgement from the kernel")]
    NoAck {
        /// What was asked.
        request: String,
    },
    /// The thread that owns the socket has stopped.
    #[error("the IPVS socket thread has stopped")]
    Stopped,
}

/// The kernel's answer to one operation of a plan.
#[derive(Debug)]
pub enum OpOutcome {
    /// Done as asked.
    Done,
    /// The kernel already had it ("not found" on delete).
    AlreadyConverged,
    /// The object to add exists already: it appeared after the dump the plan
    /// was made from and may differ from what was asked (another scheduler or
    /// weight); the next reconcile compares it.
    Appeared,
    /// The object to change has gone; the next reconcile re-plans.
    Vanished,
    /// A real failure.
    Failed(IpvsError),
}

/// What applying a plan did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Operations the kernel carried out.
    pub done: usize,
    /// Operations the kernel had already converged on.
    pub already: Vec<IpvsOp>,
    /// Adds of objects that appeared meanwhile (compared again next round).
    pub appeared: Vec<IpvsOp>,
    /// Operations on objects that vanished meanwhile.
    pub vanished: Vec<IpvsOp>,
    /// Operations that failed, with why.
    pub failed: Vec<(IpvsOp, IpvsError)>,
}

impl ApplyReport {
    /// Whether the kernel now holds what the plan asked (as far as the
    /// plan's operations go).
    pub fn converged(&self) -> bool {
        self.failed.is_empty() && self.vanished.is_empty() && self.appeared.is_empty()
    }
}

/// What the kernel answered to one request.
enum Answer {
    Ok(Vec<Reply>),
    Err(i32),
}

/// An open generic netlink socket bound to the IPVS family.
pub struct IpvsSocket {
    sock: NlSocket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for IpvsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpvsSocket")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl IpvsSocket {
    /// Open a socket and resolve the "IPVS" family.
    pub fn connect() -> Result<Self, IpvsError> {
        let sock = NlSocket::connect(NlFamily::Generic, None, Groups::empty())?;
        sock.block()?;
        // A larger buffer holds the acknowledgements of a whole batch; the
        // kernel caps it, and BATCH is small enough for the default.
        let _ = sock.set_recv_buffer_size(RCVBUF);
        let mut s = IpvsSocket {
            sock,
            family: 0,
            seq: 0,
            buf: vec![0; DATAGRAM],
        };
        s.family = s.resolve_family()?;
        Ok(s)
    }

    /// The family id the kernel gave "IPVS".
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let mut payload = vec![libc::CTRL_CMD_GETFAMILY as u8, 2, 0, 0];
        let name = codec::FAMILY_NAME.as_bytes();
        let len = (4 + name.len() + 1) as u16;
        payload.extend_from_slice(&len.to_ne_bytes());
        payload.extend_from_slice(&(libc::CTRL_ATTR_FAMILY_NAME as u16).to_ne_bytes());
        payload.extend_from_slice(name);
        payload.push(0);
        payload.resize((payload.len() + 3) & !3, 0);
        let seq = self.next_seq();
        let bytes = frame(GENL_ID_CTRL, NlmF::REQUEST | NlmF::ACK, seq, payload)?;
        self.sock.send(&bytes, neli::consts::socket::Msg::empty())?;
        let mut id = None;
        let mut done = false;
        while !done {
            for msg in self.recv()? {
                if *msg.nl_seq() != seq {
                    continue;
                }
                match msg.nl_payload() {
                    NlPayload::Payload(p) => {
                        let p: &[u8] = p.as_ref();
                        let genl = Genlmsghdr::<CtrlCmd, CtrlAttr>::from_bytes_with_input(
                            &mut Cursor::new(p),
                            p.len(),
                        )
                        .map_err(|e| IpvsError::Framing(e.to_string()))?;
                        id = genl
                            .attrs()
                            .get_attr_handle()
                            .get_attr_payload_as::<u16>(CtrlAttr::FamilyId)
                            .ok();
                    }
                    NlPayload::Err(e) if -*e.error() == libc::ENOENT => {
                        return Err(IpvsError::NoFamily);
                    }
                    NlPayload::Err(e) => {
                        return Err(IpvsError::Io(std::io::Error::from_raw_os_error(
                            -*e.error(),
                        )));
                    }
                    _ => done = true,
                }
            }
        }
        id.ok_or(IpvsError::NoFamily)
    }

    /// Receive one datagram and split it into netlink messages.
    fn recv(&mut self) -> Result<Vec<Nlmsghdr<u16, Buffer>>, IpvsError> {
        let (n, _) = self
            .sock
            .recv(&mut self.buf[..], neli::consts::socket::Msg::empty())?;
        let mut cur = Cursor::new(&self.buf[..n]);
        let mut out = Vec::new();
        while (cur.position() as usize) < n {
            let msg = Nlmsghdr::<u16, Buffer>::from_bytes(&mut cur)
                .map_err(|e| IpvsError::Framing(e.to_string()))?;
            out.push(msg);
        }
        Ok(out)
    }

    /// Send requests that are not dumps, pipelined, and return each one's
    /// answer in order.
    fn batch(&mut self, reqs: &[Request]) -> Result<Vec<Answer>, IpvsError> {
        let mut answers = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(BATCH) {
            let mut bytes = Vec::new();
            let mut seqs = Vec::with_capacity(chunk.len());
            for r in chunk {
                let seq = self.next_seq();
                seqs.push(seq);
                bytes.extend(frame(
                    self.family,
                    NlmF::REQUEST | NlmF::ACK,
                    seq,
                    r.encode(),
                )?);
            }
            self.sock.send(&bytes, neli::consts::socket::Msg::empty())?;
            let mut got: Vec<Option<Answer>> = (0..chunk.len()).map(|_| None).collect();
            let mut replies: Vec<Vec<Reply>> = vec![Vec::new(); chunk.len()];
            let mut pending = chunk.len();
            while pending > 0 {
                for msg in self.recv()? {
                    let Some(i) = seqs.iter().position(|s| s == msg.nl_seq()) else {
                        continue;
                    };
                    match msg.nl_payload() {
                        NlPayload::Payload(p) => replies[i].push(codec::decode_reply(p.as_ref())?),
                        NlPayload::Ack(_) | NlPayload::Empty | NlPayload::DumpExtAck(_) => {
                            if got[i].is_none() {
                                got[i] = Some(Answer::Ok(std::mem::take(&mut replies[i])));
                                pending -= 1;
                            }
                        }
                        NlPayload::Err(e) => {
                            if got[i].is_none() {
                                got[i] = Some(Answer::Err(-*e.error()));
                                pending -= 1;
                            }
                        }
                    }
                }
            }
            for (a, r) in got.into_iter().zip(chunk) {
                answers.push(a.ok_or_else(|| IpvsError::NoAck {
                    request: describe(r),
                })?);
            }
        }
        Ok(answers)
    }

    /// Run one dump request to its end.
    fn dump(&mut self, req: &Request) -> Result<Vec<Reply>, IpvsError> {
        let seq = self.next_seq();
        let bytes = frame(self.family, NlmF::REQUEST | NlmF::DUMP, seq, req.encode())?;
        self.sock.send(&bytes, neli::consts::socket::Msg::empty())?;
        let mut out = Vec::new();
        loop {
            for msg in self.recv()? {
                if *msg.nl_seq() != seq {
                    continue;
                }
                if *msg.nl_type() == NLMSG_DONE {
                    return Ok(out);
                }
                match msg.nl_payload() {
                    NlPayload::Payload(p) => out.push(codec::decode_reply(p.as_ref())?),
                    NlPayload::Err(e) => {
                        let errno = -*e.error();
                        return Err(kernel_error(req, errno));
                    }
                    // An acknowledgement ends a dump as NLMSG_DONE does.
                    _ => return Ok(out),
                }
            }
        }
    }

    /// One request that is not a dump.
    fn call(&mut self, req: Request) -> Result<Vec<Reply>, IpvsError> {
        match self.batch(std::slice::from_ref(&req))?.pop() {
            Some(Answer::Ok(r)) => Ok(r),
            Some(Answer::Err(errno)) => Err(kernel_error(&req, errno)),
            None => Err(IpvsError::NoAck {
                request: describe(&req),
            }),
        }
    }

    /// Every service, in one dump.
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        Ok(self
            .dump(&Request::DumpServices)?
            .into_iter()
            .filter_map(|r| match r {
                Reply::Service(s) => Some(s),
                _ => None,
            })
            .collect())
    }

    /// One service.
    pub fn service(&mut self, key: ServiceKey) -> Result<ServiceEntry, IpvsError> {
        let req = Request::GetService(key);
        self.call(req.clone())?
            .into_iter()
            .find_map(|r| match r {
                Reply::Service(s) => Some(s),
                _ => None,
            })
            .ok_or_else(|| IpvsError::NoAck {
                request: describe(&req),
            })
    }

    /// The destinations of a service, in one dump.
    pub fn dests(&mut self, key: ServiceKey) -> Result<Vec<DestEntry>, IpvsError> {
        Ok(self
            .dump(&Request::DumpDests(key))?
            .into_iter()
            .filter_map(|r| match r {
                Reply::Dest(d) => Some(d),
                _ => None,
            })
            .collect())
    }

    /// The whole table: one dump of the services, then one per service for
    /// its destinations. A service deleted between the two is left out.
    pub fn table(&mut self) -> Result<Table, IpvsError> {
        let mut table = Table::new();
        for entry in self.services()? {
            let key = entry.service.key;
            let dests = match self.dests(key) {
                Ok(d) => d,
                Err(IpvsError::Kernel { errno, .. }) if errno == libc::ESRCH => continue,
                Err(e) => return Err(e),
            };
            table.insert(
                key,
                ServiceState {
                    service: entry.service,
                    dests: dests.into_iter().map(|d| (d.dest.key, d.dest)).collect(),
                },
            );
        }
        Ok(table)
    }

    /// Carry out a plan, pipelined; each operation's outcome is classified:
    /// "not found" on a delete counts as convergence, "already exists" on an
    /// add is no failure but makes the round re-plan (the object may differ).
    pub fn apply(&mut self, ops: &[IpvsOp]) -> Result<ApplyReport, IpvsError> {
        let reqs: Vec<Request> = ops.iter().map(request_of).collect();
        let answers = self.batch(&reqs)?;
        let mut report = ApplyReport::default();
        for (op, answer) in ops.iter().zip(answers) {
            let outcome = match answer {
                Answer::Ok(_) => OpOutcome::Done,
                Answer::Err(errno) => classify(op, errno),
            };
            match outcome {
                OpOutcome::Done => report.done += 1,
                OpOutcome::AlreadyConverged => report.already.push(op.clone()),
                OpOutcome::Appeared => report.appeared.push(op.clone()),
                OpOutcome::Vanished => report.vanished.push(op.clone()),
                OpOutcome::Failed(e) => report.failed.push((op.clone(), e)),
            }
        }
        Ok(report)
    }

    /// Version and connection table size.
    pub fn info(&mut self) -> Result<Info, IpvsError> {
        self.call(Request::GetInfo)?
            .into_iter()
            .find_map(|r| match r {
                Reply::Info(i) => Some(i),
                _ => None,
            })
            .ok_or(IpvsError::NoAck {
                request: "get IPVS info".into(),
            })
    }

    /// The connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        self.call(Request::GetConfig)?
            .into_iter()
            .find_map(|r| match r {
                Reply::Config(t) => Some(t),
                _ => None,
            })
            .ok_or(IpvsError::NoAck {
                request: "get IPVS timeouts".into(),
            })
    }

    /// Set the connection timeouts (0 leaves one unchanged).
    pub fn set_timeouts(&mut self, t: Timeouts) -> Result<(), IpvsError> {
        self.call(Request::SetConfig(t)).map(drop)
    }

    /// The running sync daemons.
    pub fn daemons(&mut self) -> Result<Vec<Daemon>, IpvsError> {
        Ok(self
            .dump(&Request::DumpDaemons)?
            .into_iter()
            .filter_map(|r| match r {
                Reply::Daemon(d) => Some(d),
                _ => None,
            })
            .collect())
    }

    /// Start a sync daemon.
    pub fn start_daemon(&mut self, d: Daemon) -> Result<(), IpvsError> {
        self.call(Request::NewDaemon(d)).map(drop)
    }

    /// Stop a sync daemon.
    pub fn stop_daemon(&mut self, state: DaemonState) -> Result<(), IpvsError> {
        self.call(Request::DelDaemon(state)).map(drop)
    }

    /// Delete every service.
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.call(Request::Flush).map(drop)
    }

    /// Zero the counters of one service or of all.
    pub fn zero(&mut self, key: Option<ServiceKey>) -> Result<(), IpvsError> {
        self.call(Request::Zero(key)).map(drop)
    }

    /// Send raw requests pipelined (for tools and benchmarks); each answer
    /// is `Ok` or the kernel's error.
    pub fn execute(&mut self, reqs: &[Request]) -> Result<Vec<Result<(), IpvsError>>, IpvsError> {
        Ok(self
            .batch(reqs)?
            .into_iter()
            .zip(reqs)
            .map(|(a, r)| match a {
                Answer::Ok(_) => Ok(()),
                Answer::Err(errno) => Err(kernel_error(r, errno)),
            })
            .collect())
    }
}

/// A netlink message with `payload` after the header, as bytes.
fn frame(ty: u16, flags: NlmF, seq: u32, payload: Vec<u8>) -> Result<Vec<u8>, IpvsError> {
    let msg = NlmsghdrBuilder::default()
        .nl_type(ty)
        .nl_flags(flags)
        .nl_seq(seq)
        .nl_payload(NlPayload::<u16, Buffer>::Payload(Buffer::from(payload)))
        .build()
        .map_err(|e| IpvsError::Framing(e.to_string()))?;
    let mut cur = Cursor::new(Vec::new());
    msg.to_bytes(&mut cur)
        .map_err(|e| IpvsError::Framing(e.to_string()))?;
    Ok(cur.into_inner())
}

/// The request that carries out an operation.
pub fn request_of(op: &IpvsOp) -> Request {
    match op {
        IpvsOp::AddService(s) => Request::NewService(s.clone()),
        IpvsOp::SetService(s) => Request::SetService(s.clone()),
        IpvsOp::DelService(k) => Request::DelService(*k),
        IpvsOp::AddDest(k, d) => Request::NewDest(*k, *d),
        IpvsOp::SetDest(k, d) => Request::SetDest(*k, *d),
        IpvsOp::DelDest(k, d) => Request::DelDest(*k, *d),
    }
}

/// What an errno means for an operation of a plan (`ip_vs_ctl.c`:
/// `ip_vs_genl_set_cmd` answers ESRCH for a missing service and EEXIST for
/// an existing one; `ip_vs_add_dest` EEXIST, `ip_vs_edit_dest` and
/// `ip_vs_del_dest` ENOENT for a destination; `ip_vs_add_service` and
/// `ip_vs_edit_service` ENOENT for an unknown scheduler or persistence
/// engine).
pub fn classify(op: &IpvsOp, errno: i32) -> OpOutcome {
    use libc::{EEXIST, ENOENT, ESRCH};
    match (op, errno) {
        (IpvsOp::AddService(_), EEXIST) => OpOutcome::Appeared,
        (IpvsOp::DelService(_), ESRCH | ENOENT) => OpOutcome::AlreadyConverged,
        (IpvsOp::SetService(_), ESRCH) => OpOutcome::Vanished,
        (IpvsOp::AddDest(..), EEXIST) => OpOutcome::Appeared,
        (IpvsOp::AddDest(..), ESRCH) => OpOutcome::Vanished,
        (IpvsOp::SetDest(..), ENOENT | ESRCH) => OpOutcome::Vanished,
        (IpvsOp::DelDest(..), ENOENT | ESRCH) => OpOutcome::AlreadyConverged,
        _ => OpOutcome::Failed(kernel_error(&request_of(op), errno)),
    }
}

/// A kernel refusal with what to do about it.
fn kernel_error(req: &Request, errno: i32) -> IpvsError {
    let hint = match (req, errno) {
        (Request::NewService(s) | Request::SetService(s), libc::ENOENT) => match &s.pe_name {
            Some(pe) => format!(
                "; scheduler '{}' (module {}) or persistence engine '{pe}' (module ip_vs_pe_{pe}) is not available in this kernel",
                s.scheduler,
                scheduler_module(&s.scheduler)
            ),
            None => format!(
                "; scheduler '{}' is not available: the kernel could not load module {}",
                s.scheduler,
                scheduler_module(&s.scheduler)
            ),
        },
        (Request::NewDest(k, d) | Request::SetDest(k, d), libc::EINVAL)
            if k.family() != super::model::Family::of(&d.key.addr) =>
        {
            "; a destination of another family than its service needs tunnel forwarding and no running sync daemon".into()
        }
        (Request::NewDest(..), libc::EINVAL) => {
            "; the kernel takes an IPv4 destination only if its routing tables call the address unicast (is `lo` up in this namespace?)".into()
        }
        (Request::NewDest(..) | Request::SetDest(..), libc::ERANGE) => {
            "; weight must be 0..=2147483647 and the lower threshold at most the upper".into()
        }
        (_, libc::EPERM) => "; managing IPVS needs CAP_NET_ADMIN".into(),
        (_, libc::EAFNOSUPPORT) => "; this kernel's IPVS was built without IPv6".into(),
        (_, libc::EINVAL) => "; the kernel refused the attributes".into(),
        _ => String::new(),
    };
    IpvsError::Kernel {
        request: describe(req),
        errno,
        hint,
    }
}

/// A request in words, for errors.
pub fn describe(req: &Request) -> String {
    match req {
        Request::NewService(s) => format!("add service {} ({})", s.key, s.scheduler),
        Request::SetService(s) => format!("change service {} ({})", s.key, s.scheduler),
        Request::DelService(k) => format!("delete service {k}"),
        Request::GetService(k) => format!("get service {k}"),
        Request::DumpServices => "list services".into(),
        Request::NewDest(k, d) => format!("add destination {} to service {k}", d.key),
        Request::SetDest(k, d) => format!("change destination {} of service {k}", d.key),
        Request::DelDest(k, d) => format!("delete destination {d} of service {k}"),
        Request::DumpDests(k) => format!("list destinations of service {k}"),
        Request::NewDaemon(d) => format!("start sync daemon {:?} on {}", d.state, d.mcast_ifn),
        Request::DelDaemon(s) => format!("stop sync daemon {s:?}"),
        Request::DumpDaemons => "list sync daemons".into(),
        Request::SetConfig(_) => "set IPVS timeouts".into(),
        Request::GetConfig => "get IPVS timeouts".into(),
        Request::GetInfo => "get IPVS info".into(),
        Request::Zero(Some(k)) => format!("zero counters of service {k}"),
        Request::Zero(None) => "zero all counters".into(),
        Request::Flush => "flush IPVS".into(),
    }
}

type Job = Box<dyn FnOnce(&mut IpvsSocket) + Send>;

/// An async handle to the thread that owns the IPVS socket.
#[derive(Debug, Clone)]
pub struct IpvsHandle {
    job_tx: mpsc::Sender<Job>,
}

impl IpvsHandle {
    /// Open the socket and start its thread; the thread ends when every
    /// handle is dropped.
    pub fn spawn() -> Result<Self, IpvsError> {
        let mut sock = IpvsSocket::connect()?;
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ipvs-netlink".into())
            .spawn(move || {
                for job in job_rx {
                    job(&mut sock);
                }
            })?;
        Ok(IpvsHandle { job_tx })
    }

    /// Run `f` on the socket's thread and wait for its result.
    pub async fn run<R, F>(&self, f: F) -> Result<R, IpvsError>
    where
        R: Send + 'static,
        F: FnOnce(&mut IpvsSocket) -> R + Send + 'static,
    {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.job_tx
            .send(Box::new(move |s| {
                let _ = done_tx.send(f(s));
            }))
            .map_err(|_| IpvsError::Stopped)?;
        done_rx.await.map_err(|_| IpvsError::Stopped)
    }

    /// Apply a plan.
    pub async fn apply(&self, ops: Vec<IpvsOp>) -> Result<ApplyReport, IpvsError> {
        self.run(move |s| s.apply(&ops)).await?
    }

    /// Read the whole table.
    pub async fn table(&self) -> Result<Table, IpvsError> {
        self.run(|s| s.table()).await?
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::ipvs::model::{Destination, Forwarding, Protocol, Service};

    fn key() -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: 80,
        }
    }

    /// In: errnos the kernel gives for each operation. Out: exists/not-found
    /// are convergence, a missing object to change is "vanished", an
    /// unknown scheduler is an error naming scheduler and module.
    #[test]
    fn errnos_are_classified() {
        let d = Destination::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            80,
            Forwarding::Route,
        );
        let add = IpvsOp::AddService(Service::new(key(), "mh"));
        assert!(matches!(classify(&add, libc::EEXIST), OpOutcome::Appeared));
        assert!(matches!(
            classify(&IpvsOp::DelService(key()), libc::ESRCH),
            OpOutcome::AlreadyConverged
        ));
        assert!(matches!(
            classify(&IpvsOp::AddDest(key(), d), libc::EEXIST),
            OpOutcome::Appeared
        ));
        assert!(matches!(
            classify(&IpvsOp::DelDest(key(), d.key), libc::ENOENT),
            OpOutcome::AlreadyConverged
        ));
        assert!(matches!(
            classify(&IpvsOp::SetDest(key(), d), libc::ENOENT),
            OpOutcome::Vanished
        ));
        assert!(matches!(
            classify(&IpvsOp::SetService(Service::new(key(), "rr")), libc::ESRCH),
            OpOutcome::Vanished
        ));
        let OpOutcome::Failed(e) = classify(&add, libc::ENOENT) else {
            panic!("unknown scheduler must fail");
        };
        assert_eq!(
            e.to_string(),
            "add service tcp 192.0.2.1:80 (mh): No such file or directory (os error 2); scheduler 'mh' is not available: the kernel could not load module ip_vs_mh"
        );
    }

    /// A request framed by neli is a netlink header followed by the codec's bytes.
    #[test]
    fn framing() {
        let payload = Request::Flush.encode();
        let bytes = frame(0x22, NlmF::REQUEST | NlmF::ACK, 7, payload.clone()).unwrap();
        assert_eq!(&bytes[..4], &20u32.to_ne_bytes());
        assert_eq!(&bytes[4..6], &0x22u16.to_ne_bytes());
        assert_eq!(
            &bytes[6..8],
            &((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes()
        );
        assert_eq!(&bytes[8..12], &7u32.to_ne_bytes());
        assert_eq!(&bytes[16..], &payload[..]);
    }
}
