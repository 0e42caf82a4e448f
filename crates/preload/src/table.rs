//! The program's fds that are ustack sockets, and the kernel fds behind them.
//!
//! Each ustack socket is backed by one end (`own`) of an AF_UNIX socket pair the library
//! opens; the program's fd is a dup of it, so fd numbers come from the kernel, close and
//! dup act on a real file, and FD_SETSIZE holds. The pair's readiness is made to mirror the
//! ustack socket's (see [`Sock::refresh`]): a byte waiting in `own` when the socket is
//! readable, `own`'s send buffer filled when it is not writable. So the kernel's poll,
//! select and epoll report ustack sockets correctly, in sets mixed with any other fds,
//! without the library interposing them, and a blocking call waits in the kernel's poll on
//! `own` — where a signal interrupts it as it would interrupt the kernel's own socket call.
//!
//! The mirror is kept in step from two sides: after each call the library makes on the
//! socket (in the caller's thread), and by a watcher thread for what the stack thread does
//! (packets, timers), told which sockets changed by [`Stack::on_touched`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use libc::c_int;
use ustack::engine::SockId;
use ustack::{Domain, Errno, Events, PollFd, Socket, Stack, Type};

use crate::options::Options;
use crate::real;

/// The program's fds that are ustack sockets. Dups share one [`Sock`].
static TABLE: RwLock<BTreeMap<c_int, Arc<Sock>>> = RwLock::new(BTreeMap::new());

/// Whether any ustack socket was ever made: until then, read/write/close skip the table.
static ANY: AtomicBool = AtomicBool::new(false);

/// One bit per fd below [`MARKED_FDS`]: set while the fd is in [`TABLE`]. A call on any
/// other fd (a file, a pipe, a terminal) is told so without taking the table's lock — so
/// that a signal handler's `write` to a pipe (the self-pipe trick, Python's wakeup fd) can
/// never wait for a lock its own thread holds.
static MARKS: [AtomicU64; MARKED_FDS / 64] = [const { AtomicU64::new(0) }; MARKED_FDS / 64];
const MARKED_FDS: usize = 1 << 16;

fn mark(fd: c_int, on: bool) {
    let Ok(fd) = usize::try_from(fd) else { return };
    if fd < MARKED_FDS {
        let bit = 1u64 << (fd % 64);
        if on {
            MARKS[fd / 64].fetch_or(bit, Ordering::Release);
        } else {
            MARKS[fd / 64].fetch_and(!bit, Ordering::Release);
        }
    }
}

/// False if `fd` is certainly not a ustack socket.
fn marked(fd: c_int) -> bool {
    match usize::try_from(fd) {
        Ok(fd) if fd < MARKED_FDS => MARKS[fd / 64].load(Ordering::Acquire) & (1u64 << (fd % 64)) != 0,
        Ok(_) => true,
        Err(_) => false,
    }
}

/// The sockets by their stack id, for the watcher.
static BY_ID: Mutex<BTreeMap<SockId, Weak<Sock>>> = Mutex::new(BTreeMap::new());

/// Sockets the stack touched since the watcher last looked.
static DIRTY: Mutex<Vec<SockId>> = Mutex::new(Vec::new());

/// The eventfd that wakes the watcher.
static WATCHER: OnceLock<OwnedFd> = OnceLock::new();

/// Set in the child of a fork: the stack (its thread, its TUN) stayed with the parent.
static FORKED: AtomicBool = AtomicBool::new(false);

/// The process that owns the stack.
static OWNER: AtomicU32 = AtomicU32::new(0);

/// The library's own fds are moved up to here (or the first free one above), so that the
/// program's fds are numbered as they would be without ustack.
const HIGH_FD: c_int = 512;

/// Bytes queued in `own` at most to signal readability: one per change the watcher saw
/// while the socket stayed readable, so that edge-triggered epoll sees each arrival.
const MAX_EDGES: u32 = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this process is the child of a fork of the process that has the stack.
pub fn forked() -> bool {
    FORKED.load(Ordering::Relaxed)
}

extern "C" fn in_child() {
    FORKED.store(true, Ordering::Relaxed);
}

/// The one-line message of a call a forked child makes on a ustack socket (or to make one).
pub fn refuse_in_child(what: &str) -> c_int {
    let _ = writeln!(
        std::io::stderr(),
        "ustack: {what} in process {} (a fork of {}): ustack's sockets live in the process that \
         opened them, not in its forks; failing with EOPNOTSUPP",
        std::process::id(),
        OWNER.load(Ordering::Relaxed)
    );
    libc::EOPNOTSUPP
}

/// Once the stack runs: the watcher, the touch hook, the fork handler.
pub fn after_start(stack: &'static Stack) {
    OWNER.store(std::process::id(), Ordering::Relaxed);
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    // SAFETY: eventfd has no pointer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        let _ = writeln!(
            std::io::stderr(),
            "ustack: no eventfd for the readiness watcher: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: fd was just opened and is ours.
    let fd = move_high(unsafe { OwnedFd::from_raw_fd(fd) });
    let raw = fd.as_raw_fd();
    let _ = WATCHER.set(fd);
    stack.on_touched(Box::new(move |id| {
        lock(&DIRTY).push(id);
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a local.
        unsafe { real::write(raw, (&one as *const u64).cast(), 8) };
    }));
    let spawned = std::thread::Builder::new().name("ustack-ready".into()).spawn(move || watch(raw));
    if let Err(e) = spawned {
        let _ = writeln!(std::io::stderr(), "ustack: no thread for the readiness watcher: {e}");
    }
}

/// The watcher: brings the mirrors of the sockets the stack touched up to date.
fn watch(wake: RawFd) {
    let mut ids = Vec::new();
    loop {
        let mut pfd = libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd on the stack.
        unsafe { real::poll(&mut pfd, 1, -1) };
        let mut count = 0u64;
        // SAFETY: an 8-byte read into a local.
        unsafe { real::read(wake, (&mut count as *mut u64).cast(), 8) };
        std::mem::swap(&mut ids, &mut *lock(&DIRTY));
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            let sock = lock(&BY_ID).get(&id).and_then(Weak::upgrade);
            if let Some(sock) = sock {
                sock.refresh(true);
            }
        }
        ids.clear();
    }
}

/// Moves a library fd up to [`HIGH_FD`] (close-on-exec), out of the program's numbering.
fn move_high(fd: OwnedFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd.
    let high = unsafe { real::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD as usize) };
    if high < 0 {
        return fd;
    }
    // SAFETY: `high` was just made and is ours; `fd` closes on drop.
    unsafe { OwnedFd::from_raw_fd(high) }
}

/// The socket behind `fd`, if it is a ustack socket.
pub fn lookup(fd: c_int) -> Option<Arc<Sock>> {
    if !ANY.load(Ordering::Relaxed) || !marked(fd) {
        return None;
    }
    TABLE.read().unwrap_or_else(|p| p.into_inner()).get(&fd).cloned()
}

/// Records that `fd` is (now) `sock`, e.g. after a dup.
pub fn insert(fd: c_int, sock: Arc<Sock>) {
    ANY.store(true, Ordering::Relaxed);
    // The socket an fd replaced (dup2) is dropped after the lock: dropping it closes fds.
    let replaced = TABLE.write().unwrap_or_else(|p| p.into_inner()).insert(fd, sock);
    mark(fd, true);
    drop(replaced);
}

/// Forgets `fd` (closed, or replaced by dup2). In a forked child the socket is not
/// touched (the stack is the parent's): the handle is leaked instead of closed.
pub fn remove(fd: c_int) {
    if !ANY.load(Ordering::Relaxed) || !marked(fd) {
        return;
    }
    let removed = TABLE.write().unwrap_or_else(|p| p.into_inner()).remove(&fd);
    mark(fd, false);
    if let Some(sock) = removed
        && forked()
    {
        std::mem::forget(sock);
    }
}

/// Which way a call waits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Way {
    In,
    Out,
}

/// What the mirror shows now.
#[derive(Default)]
struct Mirror {
    /// Bytes waiting in `own` (readable while non-zero).
    bytes: u32,
    /// `own`'s send buffer is full (not writable).
    full: bool,
}

/// One ustack socket (the open file description: dups share it).
pub struct Sock {
    pub socket: Socket,
    pub domain: Domain,
    pub ty: Type,
    /// The library's end of the pair the program's fd is a dup of.
    own: OwnedFd,
    /// The other end: bytes written here make `own` readable; draining it makes `own`
    /// writable again.
    peer: OwnedFd,
    mirror: Mutex<Mirror>,
    pub options: Mutex<Options>,
    /// Where a non-blocking connect() is going, until its outcome is collected (by
    /// connect() or SO_ERROR).
    pub connecting: Mutex<Option<std::net::SocketAddr>>,
    /// Data read ahead of the program (MSG_PEEK, FIONREAD), given before the socket's.
    pub peeked: Mutex<Peeked>,
    pub listening: AtomicBool,
    /// What the next connect() says after SO_ERROR collected a non-blocking connect's
    /// outcome (Linux's socket is still "connecting" until connect() is called again):
    /// 0 for a connection made, ECONNABORTED for one that failed.
    pub collected: Mutex<Option<c_int>>,
}

/// Data received from the stack but not yet by the program.
#[derive(Default)]
pub struct Peeked {
    pub data: Vec<u8>,
    /// For a datagram: its sender (the data is that one datagram).
    pub from: Option<std::net::SocketAddr>,
    /// A datagram was peeked (it may be empty).
    pub datagram: bool,
}

impl Peeked {
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && !self.datagram
    }
}

impl Sock {
    /// Backs `socket` with a fresh socket pair; gives the program's fd (the lowest free,
    /// as socket() gives) and the socket. `flags`: SOCK_NONBLOCK, SOCK_CLOEXEC.
    pub fn open(socket: Socket, domain: Domain, ty: Type, flags: c_int) -> Result<(c_int, Arc<Sock>), c_int> {
        socket.set_nonblocking(true).map_err(|e| e.code())?;
        let mut pair = [-1; 2];
        // SAFETY: socketpair writes two fds into `pair`.
        if unsafe { real::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) } < 0
        {
            return Err(last_errno());
        }
        // SAFETY: both fds were just made and are ours.
        let (own, peer) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        // The smallest send buffer: few bytes fill it (see `refresh`).
        let small: c_int = 1;
        // SAFETY: an int option from a local.
        unsafe {
            real::setsockopt(own.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, (&small as *const c_int).cast(), 4)
        };
        let (own, peer) = (move_high(own), move_high(peer));
        let cmd = if flags & libc::SOCK_CLOEXEC != 0 { libc::F_DUPFD_CLOEXEC } else { libc::F_DUPFD };
        // SAFETY: F_DUPFD on our open fd.
        let fd = unsafe { real::fcntl(own.as_raw_fd(), cmd, 0) };
        if fd < 0 {
            return Err(last_errno());
        }
        if flags & libc::SOCK_NONBLOCK != 0 {
            // SAFETY: F_SETFL on the fd just made.
            unsafe { real::fcntl(fd, libc::F_SETFL, (libc::O_RDWR | libc::O_NONBLOCK) as usize) };
        }
        let sock = Arc::new(Sock {
            socket,
            domain,
            ty,
            own,
            peer,
            mirror: Mutex::new(Mirror::default()),
            options: Mutex::new(Options::new(domain, ty)),
            connecting: Mutex::new(None),
            peeked: Mutex::new(Peeked::default()),
            listening: AtomicBool::new(false),
            collected: Mutex::new(None),
        });
        lock(&BY_ID).insert(sock.socket.id(), Arc::downgrade(&sock));
        sock.refresh(false);
        insert(fd, sock.clone());
        Ok((fd, sock))
    }

    /// Makes `own`'s readiness what the socket's is. `edge`: the stack touched the socket,
    /// so a readable socket gets one more byte (a new edge for edge-triggered epoll).
    pub fn refresh(&self, edge: bool) {
        let mut mirror = lock(&self.mirror);
        let mut fds = [PollFd::new(&self.socket, Events::IN | Events::OUT)];
        let ready = match ustack::poll(&mut fds, Some(Duration::ZERO)) {
            Ok(_) => fds[0].revents,
            // The stack is gone: every call fails at once, so say ready both ways.
            Err(_) => Events::IN | Events::OUT,
        };
        let readable = ready.intersects(Events::IN | Events::ERR | Events::HUP) || !lock(&self.peeked).is_empty();
        let writable = ready.intersects(Events::OUT | Events::ERR | Events::HUP);
        let (own, peer) = (self.own.as_raw_fd(), self.peer.as_raw_fd());
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        if readable {
            if mirror.bytes == 0 || (edge && mirror.bytes < MAX_EDGES) {
                // SAFETY: a 1-byte send from a static.
                if unsafe { real::send(peer, b"r".as_ptr().cast(), 1, flags) } == 1 {
                    mirror.bytes += 1;
                }
            }
        } else if mirror.bytes > 0 {
            drain(own);
            mirror.bytes = 0;
        }
        if writable && mirror.full {
            drain(peer);
            mirror.full = false;
        } else if !writable && !mirror.full {
            let fill = [0u8; 4096];
            // SAFETY: sends from a local buffer until the kernel says EAGAIN (bounded: the
            // buffer is the smallest the kernel allows).
            for _ in 0..64 {
                if unsafe { real::send(own, fill.as_ptr().cast(), fill.len(), flags) } < 0 {
                    break;
                }
            }
            mirror.full = true;
        }
    }

    /// Waits until `own` is ready `way`, or `deadline`: EAGAIN then; EINTR if a signal
    /// came (as the kernel's own blocking socket calls are interrupted).
    pub fn wait(&self, way: Way, deadline: Option<Instant>) -> Result<(), c_int> {
        let events = if way == Way::In { libc::POLLIN } else { libc::POLLOUT };
        let mut pfd = libc::pollfd { fd: self.own.as_raw_fd(), events, revents: 0 };
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(libc::EAGAIN);
                }
                left.as_millis().saturating_add(1).min(i32::MAX as u128) as c_int
            }
        };
        // SAFETY: one pollfd on the stack.
        match unsafe { real::poll(&mut pfd, 1, timeout) } {
            0 => Err(libc::EAGAIN),
            n if n > 0 => Ok(()),
            // Linux restarts a socket call a handler with SA_RESTART interrupted, unless it
            // had a timeout. Which signal came is not known here: restart only if every
            // handler the program installed has SA_RESTART (a caller looping on the wait
            // tries the call again, which is what a restart is).
            _ if last_errno() == libc::EINTR && deadline.is_none() && handlers_restart() => Ok(()),
            _ => Err(last_errno()),
        }
    }

    /// A call on the socket that waits as the program's fd says (O_NONBLOCK, `dontwait`
    /// for MSG_DONTWAIT, SO_RCVTIMEO/SO_SNDTIMEO): `op` is tried until it does not say
    /// EAGAIN, waiting for the mirror between tries. The mirror is refreshed after each try.
    pub fn blocking<T>(
        &self,
        fd: c_int,
        way: Way,
        dontwait: bool,
        mut op: impl FnMut() -> Result<T, Errno>,
    ) -> Result<T, c_int> {
        let nonblocking = dontwait || is_nonblocking(fd);
        let timeout = {
            let options = lock(&self.options);
            if way == Way::In { options.rcvtimeo } else { options.sndtimeo }
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let result = op();
            self.refresh(false);
            match result {
                Err(Errno::EAGAIN) if !nonblocking => self.wait(way, deadline)?,
                other => return other.map_err(Errno::code),
            }
        }
    }

    pub fn options(&self) -> MutexGuard<'_, Options> {
        lock(&self.options)
    }

    pub fn peeked(&self) -> MutexGuard<'_, Peeked> {
        lock(&self.peeked)
    }

    pub fn collected(&self) -> MutexGuard<'_, Option<c_int>> {
        lock(&self.collected)
    }

    pub fn connecting(&self) -> MutexGuard<'_, Option<std::net::SocketAddr>> {
        lock(&self.connecting)
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        lock(&BY_ID).remove(&self.socket.id());
    }
}

/// Whether every signal handler the program installed asks for SA_RESTART.
fn handlers_restart() -> bool {
    (1..libc::SIGRTMIN()).all(|signal| {
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: sigaction only reads the current action into `action`.
        if unsafe { libc::sigaction(signal, std::ptr::null(), &mut action) } != 0 {
            return true;
        }
        let handler = action.sa_sigaction;
        handler == libc::SIG_DFL || handler == libc::SIG_IGN || action.sa_flags & libc::SA_RESTART != 0
    })
}

/// Reads `fd` empty.
fn drain(fd: RawFd) {
    let mut buf = [0u8; 4096];
    for _ in 0..1024 {
        // SAFETY: reads into a local buffer.
        if unsafe { real::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) } <= 0 {
            break;
        }
    }
}

/// O_NONBLOCK of the program's fd (kept by the kernel, so fcntl and ioctl(FIONBIO) on it
/// and on its dups need no interposing).
pub fn is_nonblocking(fd: c_int) -> bool {
    // SAFETY: F_GETFL only looks at the fd.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

pub fn last_errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}
