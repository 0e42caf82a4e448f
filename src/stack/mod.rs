//! The stack: one thread that owns the smoltcp interface and drives it, and the state the
//! socket API shares with it.
//!
//! The shape is lwIP's: a single owner of protocol state, and callers that wait for it.
//! API calls lock [`Core`], change smoltcp sockets' buffers or ustack's own tables, wake
//! the stack thread through an eventfd when there is something to send, and wait on their
//! socket's condition variable, which the stack thread signals after a round that touched
//! that socket (a packet, a timer, a state change): a thread is woken for its own socket,
//! not for every round. The stack thread reads what the device has before it takes the
//! lock and writes what smoltcp sent after letting go of it, so its device I/O overlaps
//! with API calls instead of taking turns with them. It sleeps in `poll(2)` on the device
//! and the eventfd until the next socket timer: no busy loop, no fixed tick. smoltcp is
//! handed one socket at a time (`single.rs`), so a round costs what its packets and
//! touched sockets cost, not the number of sockets.
//!
//! Every arriving frame passes ustack's demux ([`demux`]) before smoltcp sees it. That is
//! where listen backlogs are enforced, connections are created for admitted SYNs (smoltcp
//! has no backlog: a listening socket *becomes* the connection), and resets are noticed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{HardwareAddress, IpCidr};

use crate::device::Link;
use single::Which;

pub mod buffers;
pub mod clock;
mod conn;
mod cookie;
pub mod demux;
mod isn;
mod looped;
pub mod ports;
mod rewrite;
mod single;
mod staged;
mod table;
mod teardown;

pub use clock::Clock;
pub use conn::{Conn, Owner, Side};
pub use demux::{Decision, DemuxCounters, DemuxEvent, DemuxLog, Disposition, FiveTuple, Flow};
use looped::Looped;
use ports::{Holder, Ports, Proto};
use staged::Staged;
pub use table::{ConnectionInfo, DemuxRow, DemuxTable, ListenQueues};
pub use teardown::unindex;

/// The stack's hash maps: foldhash, not std's SipHash, which was 6% of the stack thread's
/// time in bulk receive. It is seeded at random per process, so a peer choosing 5-tuples
/// cannot precompute collisions in the demux table.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A socket's number in the stack, like a file descriptor (never reused within a stack).
pub type SockId = u64;

/// Frames taken from the device per lock hold, so API calls are never kept waiting long.
const INGRESS_BATCH: usize = 64;

/// Bytes of frames read from the device before the lock is taken, at most: that many
/// frames' reads overlap with API calls (which copy data in and out of socket buffers
/// under the lock) instead of taking turns with them.
const PREREAD_BYTES: usize = 1 << 20;

/// How often, at most, the stack looks at every connection for what timers changed; a
/// connection's packets and API calls are looked at at once.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Condition variables that blocked socket calls wait on, a socket's being number
/// `id % WAIT_QUEUES` (hashed wait queues, as the kernel's futexes have): no allocation per
/// socket, and sockets that share one only see a spurious wake-up, which every wait loop
/// already checks for.
const WAIT_QUEUES: usize = 1024;

/// Linux's default `net.core.somaxconn`: listen() clamps larger backlogs to it.
pub const SOMAXCONN: u32 = 4096;

/// How long a half-open (SYN-RECEIVED) connection waits for the handshake's last ACK.
/// Linux gives up after 5 SYN-ACK retransmissions, about 63 s.
pub const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(63);

/// How long a connection may stay in SYN-SENT: Linux's 127 s (`tcp_syn_retries` = 6).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(127);

/// How a stack is set up.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The stack's own addresses, with prefix lengths.
    pub addrs: Vec<IpCidr>,
    /// Bytes of receive and of send buffer per TCP connection. This is address space
    /// reserved per connection; memory is used only where data has passed through (see
    /// [`buffers`]), so generous buffers cost idle connections next to nothing.
    pub tcp_buffer: usize,
    /// Datagrams, and bytes of payload, buffered per UDP socket each way.
    pub udp_packets: usize,
    pub udp_buffer: usize,
    /// What a listener does with a SYN when its accept queue is full: drop it (Linux's
    /// default), or answer RST (Linux's `tcp_abort_on_overflow=1`).
    pub reset_on_overflow: bool,
    /// Answer SYNs the SYN queue has no room for with SYN cookies, keeping no state, as
    /// Linux does by default (`tcp_syncookies=1`). Off, such SYNs are dropped.
    pub syn_cookies: bool,
    /// How long a connect() — blocking or not — waits for the handshake before ETIMEDOUT.
    /// smoltcp itself would resend the SYN forever.
    pub connect_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            addrs: Vec::new(),
            tcp_buffer: 64 * 1024,
            udp_packets: 64,
            udp_buffer: 64 * 1024,
            reset_on_overflow: false,
            syn_cookies: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// The address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// AF_INET: IPv4.
    Inet,
    /// AF_INET6: IPv6, and IPv4 through v4-mapped addresses (dual-stack, as Linux by default).
    Inet6,
}

/// The type of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// SOCK_STREAM: TCP.
    Stream,
    /// SOCK_DGRAM: UDP.
    Dgram,
}

impl Type {
    /// The port space the type's sockets bind in.
    pub fn proto(self) -> Proto {
        match self {
            Type::Stream => Proto::Tcp,
            Type::Dgram => Proto::Udp,
        }
    }
}

/// A listener's queues (Linux's request queue and accept queue).
#[derive(Debug, Default)]
pub struct Listener {
    /// listen()'s backlog, clamped to [`SOMAXCONN`]. Up to `backlog + 1` connections wait
    /// in the accept queue, and up to `max(backlog, 1)` in the SYN queue, as in Linux.
    pub backlog: u32,
    /// Half-open connections: SYN received, SYN-ACK sent, waiting for the ACK.
    pub syn_queue: Vec<SocketHandle>,
    /// Established connections that accept() has not taken yet.
    pub accept_queue: std::collections::VecDeque<SocketHandle>,
    /// SYNs dropped because a queue was full.
    pub syns_dropped: u64,
    /// Handshake-completing ACKs dropped because the accept queue was full.
    pub acks_dropped: u64,
    /// SYNs answered with RST because the accept queue was full (reset_on_overflow).
    pub syns_reset: u64,
    /// SYNs answered with a SYN cookie because the SYN queue was full.
    pub cookies_sent: u64,
}

impl Listener {
    /// Linux's `sk_acceptq_is_full`: more than `backlog` connections already waiting.
    pub fn accept_queue_full(&self) -> bool {
        self.accept_queue.len() > self.backlog as usize
    }

    /// Linux's `inet_csk_reqsk_queue_is_full`, with a floor of one so backlog 0 still
    /// lets a connection in (Linux reaches the same through SYN cookies).
    pub fn syn_queue_full(&self) -> bool {
        self.syn_queue.len() >= (self.backlog as usize).max(1)
    }
}

/// What a socket is, as the socket API sees it.
#[derive(Debug)]
pub enum SockState {
    /// Created, maybe bound, not yet listening or connected.
    Idle,
    /// A TCP listener.
    Listening(Listener),
    /// A TCP socket with a connection (connecting, established, or closing).
    Connected(SocketHandle),
    /// A bound UDP socket, maybe with a fixed peer.
    Udp { handle: SocketHandle, peer: Option<SocketAddr> },
}

/// A socket of the API.
#[derive(Debug)]
pub struct Entry {
    pub domain: Domain,
    pub ty: Type,
    /// Open handles (a `try_clone` is a dup): the socket closes when the last one does.
    pub refs: usize,
    pub nonblocking: bool,
    pub reuse_addr: bool,
    /// The bound local address, once bound (explicitly or implicitly).
    pub local: Option<SocketAddr>,
    pub state: SockState,
    /// shutdown(SHUT_RD) was called: recv() reports end of stream once nothing is queued.
    pub shut_read: bool,
    /// shutdown(SHUT_WR) was called on a UDP socket: send() gives EPIPE (TCP keeps this
    /// in the smoltcp socket's state).
    pub shut_write: bool,
    /// Linux's SS_CONNECTING: a TCP connect() started and no connect() call has reported
    /// its outcome yet (a non-blocking one returns EINPROGRESS; the next connect() after
    /// the handshake returns success or the error).
    pub connecting: bool,
    /// Datagrams dropped because this UDP socket's receive buffer was full.
    pub udp_dropped: u64,
    /// SO_RCVTIMEO and SO_SNDTIMEO: how long a blocking call waits before EAGAIN.
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
}

/// State shared by the stack thread and the socket API, behind one lock.
pub struct Core {
    pub iface: Interface,
    /// Every smoltcp socket; smoltcp itself only ever sees one at a time (`single.rs`).
    /// Reached through [`Core::tcp_mut`] and friends, which note what changed.
    sockets: SocketSet<'static>,
    /// Where smoltcp works on one socket at a time.
    single: single::Single,
    /// The sockets smoltcp must look at this round: touched by the API or by a packet.
    egress: Vec<Which>,
    /// When each socket next needs smoltcp (a retransmission, a delayed ACK, TIME-WAIT).
    timers: single::Timers,
    /// The UDP sockets' handles, with the socket each belongs to.
    udp_handles: HashMap<SocketHandle, SockId>,
    /// The memory of the TCP sockets' buffers. Declared after `sockets` and `single` (which
    /// may hold a socket swapped in), so that every socket is dropped before it (see
    /// [`buffers::BufferPool`]).
    pub buffers: buffers::BufferPool,
    pub config: StackConfig,
    pub clock: Clock,
    pub entries: HashMap<SockId, Entry>,
    pub conns: HashMap<SocketHandle, Conn>,
    /// TCP connections by 5-tuple: the demux table.
    pub demux: HashMap<FiveTuple, SocketHandle>,
    pub ports: Ports,
    /// Closed UDP sockets still sending what they had queued, with the port they hold.
    pub udp_draining: Vec<(SocketHandle, u16)>,
    /// Listening sockets by port, for the demux to find a SYN's listener without a scan.
    pub listeners: HashMap<u16, Vec<SockId>>,
    /// Bound UDP sockets by port, for the demux to name a datagram's socket.
    pub udp_ports: HashMap<u16, Vec<SockId>>,
    /// The demux's counters and recent decisions.
    pub demux_log: DemuxLog,
    /// Connections an API call changed (close, shutdown), looked at in the next round.
    pub dirty: Vec<SocketHandle>,
    /// Work was done since the last sweep, which is due at `next_sweep`.
    sweep_owed: bool,
    next_sweep: smoltcp::time::Instant,
    /// API callers waiting on `Shared::changed`: with none, a round signals nobody.
    waiters: usize,
    /// API callers waiting on each of `Shared::queues`.
    queue_waiters: Vec<u32>,
    /// Sockets whose waiting callers this round's work may concern: their wait queues are
    /// signalled at its end.
    touched: Vec<SockId>,
    /// Bumped whenever the demux table changes (a connection, listener or UDP socket comes,
    /// goes or changes state), so a watcher can print it on every change.
    pub generation: u64,
    next_id: SockId,
    /// Why the stack stopped (device failure or shutdown), once it has.
    pub down: Option<String>,
    /// The device's MTU: the largest IP packet the stack sends.
    pub mtu: usize,
    /// The key of RFC 6528 ISNs and SYN cookies.
    secret: isn::Secret,
}

/// The part of a stack that sockets hold on to.
pub struct Shared {
    core: Mutex<Core>,
    /// Signalled after every round of the stack thread, and whenever the API changes
    /// something another API caller may wait for: for waits on many sockets at once
    /// (poll()) or on the stack as a whole.
    changed: Condvar,
    /// The sockets' wait queues (see [`WAIT_QUEUES`]).
    queues: Box<[Condvar]>,
    wake: EventFd,
}

/// A running stack: the interface, its sockets and the thread that drives them.
///
/// Dropping it stops the thread; sockets still open then fail with ENETDOWN.
pub struct Stack {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // getrandom only fails where the OS has no random source at all; fall back to the
    // clock rather than to smoltcp's fixed default seed of 0.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return nanos.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(bytes)
}

/// A random number from the OS (ephemeral ports, the interface's seed).
pub fn random_u32() -> u32 {
    random_u64() as u32
}

impl Stack {
    /// Starts a stack on `device` with `config`.
    pub fn new<D: Link + 'static>(mut device: D, config: StackConfig) -> io::Result<Stack> {
        if device.capabilities().medium != phy::Medium::Ip {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ustack needs an IP-medium (TUN-like) device"));
        }
        let clock = Clock::new();
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = random_u64();
        let mut iface = Interface::new(iface_config, &mut device, clock.now());
        let mut too_many = false;
        iface.update_ip_addrs(|addrs| {
            for cidr in &config.addrs {
                too_many |= addrs.push(*cidr).is_err();
            }
        });
        if too_many {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many addresses for one interface"));
        }
        let core = Core {
            iface,
            sockets: SocketSet::new(Vec::new()),
            single: single::Single::new(),
            egress: Vec::new(),
            timers: single::Timers::default(),
            udp_handles: HashMap::default(),
            buffers: buffers::BufferPool::new(config.tcp_buffer),
            config,
            clock,
            entries: HashMap::default(),
            conns: HashMap::default(),
            demux: HashMap::default(),
            ports: Ports::default(),
            listeners: HashMap::default(),
            udp_ports: HashMap::default(),
            demux_log: DemuxLog::default(),
            generation: 0,
            dirty: Vec::new(),
            sweep_owed: false,
            next_sweep: smoltcp::time::Instant::ZERO,
            waiters: 0,
            queue_waiters: vec![0; WAIT_QUEUES],
            touched: Vec::new(),
            udp_draining: Vec::new(),
            next_id: 3, // 0, 1 and 2 are stdin, stdout and stderr; start where a process's sockets would
            down: None,
            mtu: device.capabilities().max_transmission_unit,
            secret: isn::Secret::new(),
        };
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            changed: Condvar::new(),
            queues: (0..WAIT_QUEUES).map(|_| Condvar::new()).collect(),
            wake,
        });
        let thread_shared = shared.clone();
        let preread = preread_buffers(device.capabilities().max_transmission_unit);
        let thread = std::thread::Builder::new()
            .name("ustack".into())
            .spawn(move || run(&thread_shared, &mut device, preread))?;
        Ok(Stack { shared, thread: Some(thread) })
    }

    /// The state the socket API works on.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The stack's addresses.
    pub fn addrs(&self) -> Vec<IpCidr> {
        self.shared.lock().config.addrs.clone()
    }

    /// A snapshot of the demux table: listeners with their queues, connections with their
    /// states, bound UDP sockets, and the demux's counters.
    pub fn demux_table(&self) -> DemuxTable {
        self.shared.lock().table()
    }

    /// The demux's most recent decisions (up to [`demux::HISTORY`]), oldest first.
    pub fn demux_events(&self) -> Vec<DemuxEvent> {
        self.shared.lock().demux_log.recent.iter().copied().collect()
    }

    /// A number that changes whenever the demux table does; pass it to
    /// [`Stack::wait_for_change`].
    pub fn generation(&self) -> u64 {
        self.shared.lock().generation
    }

    /// Waits until the demux table differs from generation `seen`, or `timeout` passes.
    /// Returns the generation now.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = std::time::Instant::now() + timeout;
        let mut core = self.shared.lock();
        while core.generation == seen && core.down.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            core = self.shared.wait(core, Some(left)).0;
        }
        core.generation
    }

    /// Closes every socket as a process's exit closes its descriptors — listeners reset
    /// the connections in their queues, connections send FIN (RST if unread data is left)
    /// — and waits up to `timeout` until every FIN is acknowledged: the peers then have all
    /// the data. Sockets still held by the application fail with EBADF from then on.
    /// Returns how many connections' FINs were still unacknowledged. (What comes after —
    /// the peer's own FIN, TIME-WAIT — the stack carries on with while it runs; a
    /// process's exit does not wait for it on Linux either.)
    pub fn shutdown(&self, timeout: Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let mut core = self.shared.lock();
        let ids: Vec<SockId> = core.entries.keys().copied().collect();
        for id in ids {
            if let Some(entry) = core.entries.get_mut(&id) {
                entry.refs = 1;
            }
            core.release(id);
        }
        self.shared.wake();
        self.shared.notify_everyone();
        loop {
            let open = core
                .conns
                .keys()
                .filter(|&&h| {
                    matches!(core.tcp(h).state(), tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck)
                })
                .count();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if open == 0 || left.is_zero() || core.down.is_some() {
                log::info!(target: "ustack", "shutdown: {open} FIN(s) not acknowledged");
                return open;
            }
            core = self.shared.wait(core, Some(left)).0;
        }
    }

    /// Why the stack stopped, if it has (e.g. the device failed).
    pub fn error(&self) -> Option<String> {
        self.shared.lock().down.clone()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shared.lock().down.get_or_insert_with(|| "stack stopped".into());
        self.shared.wake();
        self.shared.notify_everyone();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Locks the core. A panic elsewhere while holding the lock is a bug; the state is
    /// still the best there is, so carry on rather than poison every later call.
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells the stack thread there is work (data to send, a connection to open or close).
    pub fn wake(&self) {
        let _ = self.wake.write(1);
    }

    /// Waits until something may have changed for socket `id` (or until `timeout`).
    /// Returns the guard and whether the wait timed out.
    pub fn wait_socket<'a>(
        &self,
        mut core: MutexGuard<'a, Core>,
        id: SockId,
        timeout: Option<Duration>,
    ) -> (MutexGuard<'a, Core>, bool) {
        let queue = wait_queue(id);
        core.queue_waiters[queue] += 1;
        let (mut core, timed_out) = wait_on(&self.queues[queue], core, timeout);
        core.queue_waiters[queue] -= 1;
        (core, timed_out)
    }

    /// Wakes the callers waiting on socket `id`, and those waiting on the stack as a whole:
    /// for an API call that changed something another thread may wait for.
    pub fn notify(&self, core: &Core, id: SockId) {
        let queue = wait_queue(id);
        if core.queue_waiters[queue] > 0 {
            self.queues[queue].notify_all();
        }
        if core.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Wakes every waiting caller (the stack stops, or every socket closes at once).
    fn notify_everyone(&self) {
        self.changed.notify_all();
        for queue in self.queues.iter() {
            queue.notify_all();
        }
    }

    /// After a round: wakes the callers waiting on the sockets it touched. A wait queue
    /// is signalled only when somebody waits on it, and once per round.
    fn notify_touched(&self, core: &mut Core) {
        let mut touched = std::mem::take(&mut core.touched);
        for id in touched.iter_mut() {
            *id = wait_queue(*id) as SockId;
        }
        touched.sort_unstable();
        touched.dedup();
        for &queue in &touched {
            if core.queue_waiters[queue as usize] > 0 {
                self.queues[queue as usize].notify_all();
            }
        }
        touched.clear();
        core.touched = touched;
        if core.waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Waits for the stack thread's next round, or until `timeout`. Returns the guard and
    /// whether the wait timed out.
    pub fn wait<'a>(&self, mut core: MutexGuard<'a, Core>, timeout: Option<Duration>) -> (MutexGuard<'a, Core>, bool) {
        core.waiters += 1;
        let (mut core, timed_out) = wait_on(&self.changed, core, timeout);
        core.waiters -= 1;
        (core, timed_out)
    }
}

/// Waits on `condvar` with the core's lock, for at most `timeout`. Returns the guard and
/// whether the wait timed out. (A poisoned lock is taken anyway, as in [`Shared::lock`].)
fn wait_on<'a>(
    condvar: &Condvar,
    core: MutexGuard<'a, Core>,
    timeout: Option<Duration>,
) -> (MutexGuard<'a, Core>, bool) {
    match timeout {
        None => (condvar.wait(core).unwrap_or_else(|p| p.into_inner()), false),
        Some(t) => {
            let (core, result) = condvar.wait_timeout(core, t).unwrap_or_else(|p| p.into_inner());
            (core, result.timed_out())
        }
    }
}

/// The wait queue of socket `id`.
fn wait_queue(id: SockId) -> usize {
    (id % WAIT_QUEUES as SockId) as usize
}

impl Core {
    /// A new socket number.
    pub fn new_id(&mut self) -> SockId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether `addr` is one of the stack's addresses.
    pub fn is_local(&self, addr: IpAddr) -> bool {
        self.config.addrs.iter().any(|cidr| IpAddr::from(cidr.address()) == addr)
    }

    /// Adds `socket`, made by `self.buffers.tcp_socket()` with `slot`, to the socket set.
    pub fn add_tcp_socket(&mut self, socket: tcp::Socket<'static>, slot: buffers::Slot) -> SocketHandle {
        let handle = self.sockets.add(socket);
        self.buffers.register(handle, slot);
        self.egress.push(Which::Tcp(handle));
        handle
    }

    /// Adds UDP socket `socket` of the API's socket `id` to the socket set.
    pub fn add_udp_socket(&mut self, socket: udp::Socket<'static>, id: SockId) -> SocketHandle {
        let handle = self.sockets.add(socket);
        self.udp_handles.insert(handle, id);
        handle
    }

    /// Removes a socket from the set and frees it, buffers and all.
    pub fn remove_socket(&mut self, handle: SocketHandle) {
        // Put a swapped-in socket back, so the set's own copy is what gets removed.
        self.single.hold(&mut self.sockets, None);
        drop(self.sockets.remove(handle));
        // SAFETY: the only socket using the handle's buffers was just dropped.
        unsafe { self.buffers.release_for(handle) };
        let which = if self.udp_handles.remove(&handle).is_some() { Which::Udp(handle) } else { Which::Tcp(handle) };
        self.timers.forget(which);
    }

    /// TCP socket `handle`.
    pub fn tcp(&self, handle: SocketHandle) -> &tcp::Socket<'static> {
        self.single.get(&self.sockets, Which::Tcp(handle))
    }

    /// TCP socket `handle`, to change: smoltcp looks at it at the end of the round.
    pub fn tcp_mut(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.egress.push(Which::Tcp(handle));
        self.single.get_mut(&mut self.sockets, Which::Tcp(handle))
    }

    /// UDP socket `handle`.
    pub fn udp(&self, handle: SocketHandle) -> &udp::Socket<'static> {
        self.single.get(&self.sockets, Which::Udp(handle))
    }

    /// UDP socket `handle`, to change: smoltcp looks at it at the end of the round.
    pub fn udp_mut(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.egress.push(Which::Udp(handle));
        self.single.get_mut(&mut self.sockets, Which::Udp(handle))
    }

    /// UDP socket `handle`, to take received datagrams from. That gives smoltcp nothing
    /// to send, so unlike [`Core::udp_mut`] it schedules no egress for the socket.
    pub fn udp_receiving(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.single.get_mut(&mut self.sockets, Which::Udp(handle))
    }

    /// Whether `which` is still a socket of the set.
    fn is_live(&self, which: Which) -> bool {
        match which {
            Which::Tcp(h) => self.conns.contains_key(&h),
            Which::Udp(h) => self.udp_handles.contains_key(&h),
        }
    }

    /// Notes that socket `which`'s waiting callers (if any) are to be woken after this round.
    fn touch(&mut self, which: Which) {
        let id = match which {
            Which::Tcp(h) => self.conns.get(&h).and_then(|c| c.owner.socket()),
            Which::Udp(h) => self.udp_handles.get(&h).copied(),
        };
        self.touched.extend(id);
    }

    /// Registers a TCP connection in the demux table.
    pub fn add_conn(&mut self, handle: SocketHandle, tuple: FiveTuple, owner: Owner, state: tcp::State) {
        self.demux.insert(tuple, handle);
        self.conns.insert(handle, Conn::new(tuple, owner, state, self.clock.now()));
        self.generation += 1;
    }

    /// Records the state smoltcp's socket for `handle` is in now, and acts on it: a
    /// completed handshake moves to its listener's accept queue, a finished connection is
    /// freed. Called right after each packet for the connection (so every transition is
    /// seen, and a half-open connection a RST sent back to LISTEN is gone before it can
    /// catch another client's SYN), for connections the API touched, and in the sweep.
    pub fn observe(&mut self, handle: SocketHandle, now: smoltcp::time::Instant) {
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let socket: &tcp::Socket = self.single.get(&self.sockets, Which::Tcp(handle));
        let state = socket.state();
        let finished = is_finished(socket);
        if conn.advance(state, now) {
            self.generation += 1;
            self.touched.extend(conn.owner.socket());
            // A completed handshake moves from the SYN queue to the accept queue at once, so
            // the next packet's accept-queue check counts it.
            let past_handshake = !matches!(state, tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed);
            if let (Owner::Listener(id), true) = (conn.owner, past_handshake)
                && let Some(Entry { state: SockState::Listening(l), .. }) = self.entries.get_mut(&id)
                && let Some(pos) = l.syn_queue.iter().position(|&h| h == handle)
            {
                l.syn_queue.swap_remove(pos);
                l.accept_queue.push_back(handle);
                log::info!(
                    target: "ustack::backlog",
                    "{}: handshake complete, to listener #{id}'s accept queue: {}/{} (backlog {}), SYN queue {}",
                    conn.tuple,
                    l.accept_queue.len(),
                    l.backlog + 1,
                    l.backlog,
                    l.syn_queue.len()
                );
            }
        }
        match conn.owner {
            // smoltcp sends a RST'd half-open socket back to LISTEN; ustack never keeps an
            // idle listening socket, so that connection is gone.
            Owner::Listener(id) if matches!(state, tcp::State::Closed | tcp::State::Listen) => {
                if let Some(Entry { state: SockState::Listening(l), .. }) = self.entries.get_mut(&id) {
                    l.syn_queue.retain(|&h| h != handle);
                    l.accept_queue.retain(|&h| h != handle);
                }
                self.free_conn(handle);
            }
            Owner::Orphan if finished => self.free_conn(handle),
            _ => {}
        }
    }

    /// Forgets a TCP connection and frees its smoltcp socket and port.
    pub fn free_conn(&mut self, handle: SocketHandle) {
        self.generation += 1;
        if let Some(conn) = self.conns.remove(&handle) {
            self.touched.extend(conn.owner.socket());
            self.demux.remove(&conn.tuple);
            if conn.holds_port {
                self.ports.release(Proto::Tcp, conn.tuple.local.port(), Holder::Connection(handle));
            }
        }
        self.remove_socket(handle);
    }

    /// After a round of work: looks at the connections the API touched, lets closed UDP
    /// sockets go once drained, and — at most every [`SWEEP_INTERVAL`], when work was done
    /// since the last time — sweeps every connection for what timers change (TIME-WAIT
    /// ending, retransmissions giving up, connect and half-open timeouts).
    fn reap(&mut self, now: smoltcp::time::Instant) {
        for handle in std::mem::take(&mut self.dirty) {
            self.observe(handle, now);
        }
        for (handle, port) in std::mem::take(&mut self.udp_draining) {
            if self.udp(handle).send_queue() > 0 {
                self.udp_draining.push((handle, port));
                continue;
            }
            self.remove_socket(handle);
            self.ports.release(Proto::Udp, port, Holder::Connection(handle));
        }
        if self.sweep_owed && now >= self.next_sweep {
            self.sweep(now);
            self.sweep_owed = false;
            self.next_sweep = now + smoltcp::time::Duration::from(SWEEP_INTERVAL);
        }
    }

    /// Every connection: timeouts first, then what its state says.
    fn sweep(&mut self, now: smoltcp::time::Instant) {
        let connect_timeout = smoltcp::time::Duration::from(self.config.connect_timeout);
        let half_open_timeout = smoltcp::time::Duration::from(HALF_OPEN_TIMEOUT);
        let handles: Vec<SocketHandle> = self.conns.keys().copied().collect();
        for handle in handles {
            let Some(conn) = self.conns.get_mut(&handle) else { continue };
            let age = now - conn.born;
            match (conn.state, conn.owner) {
                (tcp::State::SynSent, _) if age > connect_timeout => {
                    log::info!(target: "ustack::handshake", "{}: no answer to the SYN, connect() timed out", conn.tuple);
                    conn.pending_error.get_or_insert(crate::socket::Errno::ETIMEDOUT);
                    self.tcp_mut(handle).abort();
                }
                (tcp::State::SynReceived, Owner::Listener(_)) if age > half_open_timeout => {
                    log::info!(target: "ustack::backlog", "{}: half-open for {HALF_OPEN_TIMEOUT:?}, dropped", conn.tuple);
                    self.tcp_mut(handle).abort();
                }
                _ => {}
            }
            self.observe(handle, now);
        }
    }
}

/// Whether a TCP socket is done for good: closed, with no RST left to send (an aborted
/// socket keeps its endpoints until its RST has gone out).
pub fn is_finished(socket: &tcp::Socket) -> bool {
    socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none()
}

/// The buffers the stack thread reads frames into before it takes the lock: up to
/// [`PREREAD_BYTES`] of frames. Allocated by [`Stack::new`] at their full size (any IP
/// packet: a device may read up to 64 KiB), so that this fixed memory of the stack is there
/// when it starts, not counted against its first connections.
fn preread_buffers(mtu: usize) -> Vec<Vec<u8>> {
    let count = (PREREAD_BYTES / mtu.max(1)).clamp(1, INGRESS_BATCH);
    (0..count).map(|_| Vec::with_capacity(mtu.max(usize::from(u16::MAX)))).collect()
}

/// The stack thread: receive, demux, let smoltcp process, transmit, sleep.
fn run<D: Link>(shared: &Shared, device: &mut D, mut preread: Vec<Vec<u8>>) {
    let mut frame = Vec::with_capacity(device.capabilities().max_transmission_unit);
    // Packets the stack sent to its own addresses, to be received like the device's.
    let mut loopback: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut outbox = looped::Outbox::default();
    let (local, clock) = {
        let core = shared.lock();
        (core.config.addrs.iter().map(|cidr| IpAddr::from(cidr.address())).collect::<Vec<IpAddr>>(), core.clock)
    };
    loop {
        let mut prereads = 0;
        let read_at = clock.now();
        while prereads < preread.len() && device.receive_into(read_at, &mut preread[prereads]) {
            prereads += 1;
        }
        let delay = {
            let mut guard = shared.lock();
            let core = &mut *guard;
            if core.down.is_some() {
                break;
            }
            let now = core.clock.now();
            // The transmit path: loopback for the stack's own addresses, sequence numbers
            // shifted to the wire's, then the device. Built from disjoint parts of the core,
            // so smoltcp can hold the interface and sockets at the same time.
            macro_rules! out {
                () => {
                    Looped {
                        device: &mut *device,
                        local: &local,
                        queue: &mut loopback,
                        outbox: &mut outbox,
                        seq: looped::SeqNumbers {
                            conns: &mut core.conns,
                            demux: &core.demux,
                            secret: &core.secret,
                            micros: now.total_micros() as u64,
                        },
                    }
                };
            }
            // smoltcp works on one socket at a time (see `single`): `which`, or none.
            macro_rules! one {
                ($which:expr, |$set:ident, $out:ident| $body:expr) => {{
                    let which: Option<Which> = $which;
                    let which = which.filter(|&w| core.is_live(w));
                    if let Some(w) = which {
                        core.egress.push(w);
                        core.touch(w);
                    }
                    let mut $out = out!();
                    core.single.with(&mut core.sockets, which, |$set| $body)
                }};
            }
            let mut more = false;
            let mut prereads = preread[..prereads].iter_mut();
            for _ in 0..INGRESS_BATCH {
                if let Some(buffer) = prereads.next() {
                    std::mem::swap(&mut frame, buffer);
                } else if let Some(looped) = loopback.pop_front() {
                    frame = looped;
                } else if !device.receive_into(now, &mut frame) {
                    break;
                }
                more = true;
                let (disposition, target) = demux::admit(core, &mut frame, now);
                let which = match target {
                    Some(demux::Target::Tcp(handle)) => Some(Which::Tcp(handle)),
                    Some(demux::Target::Udp { handle, .. }) => Some(Which::Udp(handle)),
                    None => None,
                };
                let udp_queued = match target {
                    Some(demux::Target::Udp { handle, .. }) => core.udp(handle).recv_queue(),
                    _ => 0,
                };
                match disposition {
                    Disposition::Drop => {}
                    Disposition::Reply(packet) => {
                        let mut out = out!();
                        if let Some(token) = phy::Device::transmit(&mut out, now) {
                            phy::TxToken::consume(token, packet.len(), |buf| buf.copy_from_slice(&packet));
                        }
                    }
                    Disposition::Deliver => {
                        one!(which, |set, out| core.iface.poll_ingress_single(
                            now,
                            &mut Staged::new(&frame, &mut out),
                            set
                        ));
                    }
                    Disposition::DataThenFin(data) => {
                        one!(which, |set, out| core.iface.poll_ingress_single(
                            now,
                            &mut Staged::new(&data, &mut out),
                            set
                        ));
                        one!(which, |set, out| core.iface.poll_ingress_single(
                            now,
                            &mut Staged::new(&frame, &mut out),
                            set
                        ));
                    }
                    Disposition::Admit(handle) => {
                        one!(Some(Which::Tcp(handle)), |set, out| core.iface.poll_ingress_single(
                            now,
                            &mut Staged::new(&frame, &mut out),
                            set
                        ));
                        demux::settle(core, handle);
                    }
                    Disposition::Cookie { handle, syn } => {
                        one!(Some(Which::Tcp(handle)), |set, out| core.iface.poll_ingress_single(
                            now,
                            &mut Staged::new(&syn, &mut out),
                            set
                        ));
                        core.observe(handle, now);
                        // smoltcp answers the replayed SYN; the transmit path drops that
                        // SYN-ACK and learns the shift from it.
                        one!(Some(Which::Tcp(handle)), |set, out| while core.iface.poll_egress(now, &mut out, set)
                            == smoltcp::iface::PollResult::SocketStateChanged
                        {
                        });
                        match (core.conns.get(&handle).and_then(|c| c.shift), rewrite::tcp_header(&frame)) {
                            (Some(shift), Some((offset, _, _))) => {
                                rewrite::incoming(&mut frame, offset, shift);
                                one!(Some(Which::Tcp(handle)), |set, out| core.iface.poll_ingress_single(
                                    now,
                                    &mut Staged::new(&frame, &mut out),
                                    set
                                ));
                            }
                            _ => {
                                log::warn!(target: "ustack::backlog", "SYN cookie connection {handle}: smoltcp sent no SYN-ACK");
                                demux::forget_half_open(core, handle);
                            }
                        }
                    }
                }
                match target {
                    Some(demux::Target::Tcp(handle)) => core.observe(handle, now),
                    // smoltcp drops a datagram that does not fit without a word; count it.
                    // It drops a damaged one as silently: that is not the buffer's doing.
                    Some(demux::Target::Udp { socket, handle, len })
                        if len > 0
                            && core.udp(handle).recv_queue() == udp_queued
                            && demux::udp_checksums_ok(&frame) =>
                    {
                        core.demux_log.counters.udp_dropped += 1;
                        if let Some(Entry { udp_dropped, .. }) = core.entries.get_mut(&socket) {
                            *udp_dropped += 1;
                        }
                        log::debug!(target: "ustack::demux", "UDP socket #{socket}: receive buffer full, datagram dropped");
                    }
                    _ => {}
                }
            }
            core.iface.poll_maintenance(now);
            // Egress for the sockets packets or the API touched and those whose timer is
            // due, one at a time; each one's next deadline is noted for later rounds.
            core.timers.take_due(now, &mut core.egress);
            let mut sent = false;
            let mut egress = std::mem::take(&mut core.egress);
            egress.sort_unstable();
            egress.dedup();
            for &which in &egress {
                if !core.is_live(which) {
                    continue;
                }
                let mut out = out!();
                let mut sent_here = false;
                let at = core.single.with(&mut core.sockets, Some(which), |set| {
                    while core.iface.poll_egress(now, &mut out, set) == smoltcp::iface::PollResult::SocketStateChanged {
                        sent_here = true;
                    }
                    core.iface.poll_at(now, set)
                });
                core.timers.set(which, at);
                sent |= sent_here;
                // What it sent may have made room in its buffer (UDP), or ended it (a RST,
                // TIME-WAIT over): its waiters look. An API call that gave smoltcp nothing
                // to send wakes nobody, so a waiter's own calls cannot keep waking it.
                if sent_here {
                    core.touch(which);
                }
                if let Which::Tcp(handle) = which {
                    core.observe(handle, now);
                }
            }
            egress.clear();
            if core.egress.is_empty() {
                core.egress = egress;
            }
            core.sweep_owed |= more || sent || !core.dirty.is_empty();
            core.reap(now);
            if let Some(err) = device.take_error() {
                log::error!(target: "ustack", "device failed: {err}");
                core.down = Some(format!("device failed: {err}"));
            }
            shared.notify_touched(core);
            if more || !loopback.is_empty() || !core.egress.is_empty() {
                Some(Duration::ZERO)
            } else {
                let timers = core.timers.next().map(|at| Duration::from(at - now.min(at)));
                // An owed sweep must happen even if no timer would wake the thread.
                let sweep = core.sweep_owed.then(|| Duration::from(core.next_sweep - now.min(core.next_sweep)));
                match (timers, sweep) {
                    (Some(t), Some(s)) => Some(t.min(s)),
                    (t, s) => t.or(s),
                }
            }
        };
        outbox.flush(device, clock.now());
        if delay != Some(Duration::ZERO) {
            sleep(shared, device, delay);
        }
    }
    shared.notify_everyone();
}

/// Sleeps until the device is readable, the API wakes us, or `delay` passes.
fn sleep<D: Link>(shared: &Shared, device: &D, delay: Option<Duration>) {
    let timeout = match delay {
        // Round up: waking a little early only means another short sleep.
        Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    };
    let mut fds =
        [PollFd::new(device.wait_fd(), PollFlags::POLLIN), PollFd::new(shared.wake.as_fd(), PollFlags::POLLIN)];
    // EINTR and the like just mean another round.
    let _ = nix::poll::poll(&mut fds, timeout);
    if fds[1].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)) {
        let _ = shared.wake.read();
    }
}
