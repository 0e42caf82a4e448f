//! The engine: all of a stack's protocol state — smoltcp's interface and sockets, and
//! ustack's sockets, ports, listener queues and demux table — in one value that does no
//! I/O of its own. It has no thread, lock, clock or device: a driver hands it frames
//! ([`Engine::ingress`]), lets it work ([`Engine::poll`], which says when it next wants to
//! be polled), takes what it sent ([`Engine::outbox`]), and makes socket calls on it
//! ([`calls`]), always telling it the time. The same engine runs under the stack thread
//! on a TUN ([`crate::stack`]) and, several at once, on a virtual clock in a simulation.
//!
//! Every arriving frame passes ustack's demux ([`demux`]) before smoltcp sees it. That is
//! where listen backlogs are enforced, connections are created for admitted SYNs (smoltcp
//! has no backlog: a listening socket *becomes* the connection), and resets are noticed.
//! smoltcp is handed one socket at a time (`one_socket`), so a packet and a round cost
//! what their own sockets cost, not the number of sockets.
//!
//! Everything random (smoltcp's seed, the ISN and cookie secret, ephemeral ports, hash
//! seeds) comes from one seeded generator ([`random`]): the same seed and the same inputs
//! at the same times give the same outputs.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, Ipv6Packet};

use crate::cidr::Cidr;

use crate::errno::Errno;
use conn::LastSent;
use one_socket::Which;

pub(crate) mod buffers;
pub mod calls;
mod congestion;
mod conn;
mod cookie;
pub mod demux;
mod egress;
mod fragment;
mod give_up;
mod idle_pages;
mod isn;
mod one_frame;
mod one_socket;
pub mod options;
pub(crate) mod ports;
pub mod random;
mod rcv_window;
pub mod reassembly;
mod recovery;
mod rewrite;
mod route;
mod send_front;
mod snd_buffer;
mod table;
mod teardown;

pub(crate) use conn::Conn;
pub use conn::{Closer, Owner};
pub(crate) use demux::Disposition;
pub use demux::{Decision, DemuxCounters, DemuxEvent, DemuxLog, PacketEnds, TcpTuple};
use egress::Egress;
pub use egress::Outbox;
use one_frame::OneFrame;
use ports::{Holder, Ports, Proto};
pub use table::{ConnectionInfo, DemuxRow, DemuxTable, ListenQueues};
use teardown::unindex;

/// The engine's hash maps: foldhash, not std's SipHash, which was 6% of the stack
/// thread's time in bulk receive. Seeded from the engine's seed, so that iteration orders
/// (and with them what the engine does) follow from the seed; a real stack's seed comes
/// from the OS, so a peer choosing 5-tuples cannot precompute collisions in the demux table.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// A socket's number in the engine, like a file descriptor (never reused within an engine).
pub type SockId = u64;

/// How often, at most, the engine looks at every connection for what timers changed; a
/// connection's packets and API calls are looked at at once.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Finished connections the engine remembers (their handshake and close), newest last.
pub const FINISHED_HISTORY: usize = 1024;

/// Looped-back frames taken per poll, so one poll never runs for long.
const LOOPBACK_BATCH: usize = 64;

/// Linux's default `net.core.somaxconn`: listen() clamps larger backlogs to it.
pub const SOMAXCONN: u32 = 4096;

/// How long a half-open (SYN-RECEIVED) connection waits for the handshake's last ACK.
/// Linux gives up after 5 SYN-ACK retransmissions, about 63 s.
pub const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(63);

/// How long a connection may stay in SYN-SENT: Linux's 127 s (`tcp_syn_retries` = 6).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(127);

/// How a stack is set up.
///
/// ```
/// use ustack::StackConfig;
///
/// # fn main() -> Result<(), ustack::CidrError> {
/// let config = StackConfig {
///     addrs: vec!["10.7.0.2/24".parse()?, "fd00:7::2/64".parse()?],
///     tcp_buffer: 256 * 1024, // room for a larger window per connection
///     seed: Some(7),          // the same ISNs and ports on every run
///     ..StackConfig::default()
/// };
/// assert_eq!(config.addrs[1].prefix_len(), 64);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The stack's own addresses, with prefix lengths.
    pub addrs: Vec<Cidr>,
    /// Bytes of send buffer per TCP connection (the most SO_SNDBUF can give one), and the
    /// receive window a connection starts with. This is address space reserved per
    /// connection; memory is used only where data has passed through (see
    /// docs/architecture.md), so generous buffers cost idle connections next to nothing.
    pub tcp_buffer: usize,
    /// The most a TCP connection's receive window grows to while its application keeps
    /// up (Linux's `tcp_rmem[2]`, 6 MiB), from `tcp_buffer`; see `engine/rcv_window.rs`.
    /// The receive buffer is reserved at this size (or `tcp_buffer`, if larger), the most
    /// SO_RCVBUF can give a connection; SO_RCVBUF fixes a connection's window, as in Linux.
    pub tcp_receive_max: usize,
    /// The most a TCP connection's send buffer grows to as its congestion window does
    /// (Linux's `tcp_wmem[2]`, 4 MiB), from `tcp_buffer`; see `engine/snd_buffer.rs`.
    /// Reserved like the receive buffer; SO_SNDBUF fixes it, as in Linux.
    pub tcp_send_max: usize,
    /// Datagrams buffered per UDP socket each way.
    pub udp_packets: usize,
    /// Bytes of payload buffered per UDP socket each way (the most SO_RCVBUF/SO_SNDBUF
    /// can give one).
    pub udp_buffer: usize,
    /// What a listener does with the handshake's last ACK when its accept queue is full:
    /// drop it, so the client resends it and the connection completes later (Linux's
    /// default), or answer it with RST and forget the connection (Linux's
    /// `tcp_abort_on_overflow=1`). A SYN that finds the accept queue full is dropped either
    /// way, as in Linux.
    pub reset_on_overflow: bool,
    /// Answer SYNs the SYN queue has no room for with SYN cookies, keeping no state, as
    /// Linux does by default (`tcp_syncookies=1`). Off, such SYNs are dropped.
    pub syn_cookies: bool,
    /// How long a connect() — blocking or not — waits for the handshake before ETIMEDOUT.
    /// smoltcp itself would resend the SYN forever.
    pub connect_timeout: Duration,
    /// Gateways (at most one per IP version): destinations outside the stack's own
    /// subnets are sent through them (smoltcp's default routes). On a TUN every packet
    /// goes into the one link whatever the gateway, and the kernel side routes it on, so
    /// this says *whether* such a destination may be sent to: without a gateway of its
    /// version, it is ENETUNREACH, as in Linux without a default route.
    pub gateways: Vec<IpAddr>,
    /// The seed of everything the engine draws at random; None draws one from the OS.
    /// The same seed makes the same engine (see [`random`]).
    pub seed: Option<u64>,
    /// The congestion control of every TCP connection; CUBIC by default (see [`Congestion`]).
    pub congestion: Congestion,
    /// Who resends lost segments: ustack's recovery (SACK, RACK-TLP, a 200 ms RTO floor)
    /// by default, or smoltcp's own.
    pub loss_recovery: LossRecovery,
}

/// Who finds and resends lost TCP segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossRecovery {
    /// ustack's, beside smoltcp (`engine/recovery.rs`): a SACK scoreboard, RACK-TLP, and a
    /// retransmission timeout of `SRTT + max(4·RTTVAR, 200 ms)`, as Linux.
    #[default]
    Ustack,
    /// smoltcp 0.14's alone: a timeout of at least 1 s, go-back-N after it, one fast
    /// retransmit per loss episode, received SACK blocks ignored.
    Smoltcp,
}

impl std::str::FromStr for LossRecovery {
    type Err = String;
    fn from_str(s: &str) -> Result<LossRecovery, String> {
        match s {
            "ustack" => Ok(LossRecovery::Ustack),
            "smoltcp" => Ok(LossRecovery::Smoltcp),
            _ => Err(format!("unknown loss recovery {s:?}: expected ustack or smoltcp")),
        }
    }
}

impl std::fmt::Display for LossRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossRecovery::Ustack => "ustack",
            LossRecovery::Smoltcp => "smoltcp",
        })
    }
}

/// A TCP congestion control algorithm.
///
/// CUBIC by default, as Linux. `cubic` and `reno` are ustack's own controllers
/// (`engine/congestion.rs`), fed by ustack's loss recovery and limiting smoltcp through the
/// window it sees; with [`LossRecovery::Smoltcp`] (no ustack recovery to feed them) they
/// are smoltcp's. `smoltcp-cubic` and `smoltcp-reno` are smoltcp's own, beside ustack's
/// recovery, kept for comparison: they react to smoltcp's 1 s timeouts and its own
/// duplicate-ACK count, not to the losses ustack repairs, and collapse under loss (2 MiB
/// echoed through 5% loss each way with 5 ms of delay, `ustack sim --bytes 2097152
/// --drop-chance 5 --delay 5 --seed 1..5`, takes 3.6–4.0 s of virtual time with
/// `smoltcp-cubic` against 0.54–0.62 s with none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// CUBIC (RFC 9438) with PRR (RFC 6937), Linux's default.
    #[default]
    Cubic,
    /// Reno (RFC 5681) with PRR.
    Reno,
    /// None: a connection sends as much as the peer's receive window allows.
    None,
    /// smoltcp 0.14's CUBIC, blind to ustack's recovery.
    SmoltcpCubic,
    /// smoltcp 0.14's Reno, blind to ustack's recovery.
    SmoltcpReno,
}

impl Congestion {
    /// The names `--congestion` takes (the first three as Linux spells them in
    /// `tcp_congestion_control`).
    pub const NAMES: [&str; 5] = ["cubic", "reno", "none", "smoltcp-cubic", "smoltcp-reno"];

    /// ustack's own controller for this choice, if it is one, given who recovers loss.
    fn ustack_algorithm(self, recovery: LossRecovery) -> Option<congestion::Algorithm> {
        match (self, recovery) {
            (Congestion::Cubic, LossRecovery::Ustack) => Some(congestion::Algorithm::Cubic),
            (Congestion::Reno, LossRecovery::Ustack) => Some(congestion::Algorithm::Reno),
            _ => None,
        }
    }

    /// smoltcp's controller for this choice, given who recovers loss.
    fn smoltcp_controller(self, recovery: LossRecovery) -> tcp::CongestionControl {
        match (self, recovery) {
            (Congestion::SmoltcpCubic, _) | (Congestion::Cubic, LossRecovery::Smoltcp) => tcp::CongestionControl::Cubic,
            (Congestion::SmoltcpReno, _) | (Congestion::Reno, LossRecovery::Smoltcp) => tcp::CongestionControl::Reno,
            _ => tcp::CongestionControl::None,
        }
    }
}

/// A connection's congestion state ([`Engine::congestion_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CongestionInfo {
    /// The congestion window, in bytes.
    pub cwnd: u32,
    /// The slow start threshold, in bytes; `u32::MAX` until the first loss.
    pub ssthresh: u32,
    /// The segment size the window is counted in.
    pub mss: u32,
    /// Loss episodes that cut the window (fast recovery, with PRR).
    pub reductions: u64,
    /// Retransmission timeouts, each leaving a window of one segment.
    pub timeouts: u64,
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Congestion, String> {
        match s {
            "cubic" => Ok(Congestion::Cubic),
            "reno" => Ok(Congestion::Reno),
            "none" => Ok(Congestion::None),
            "smoltcp-cubic" => Ok(Congestion::SmoltcpCubic),
            "smoltcp-reno" => Ok(Congestion::SmoltcpReno),
            _ => Err(format!("unknown congestion control {s:?}: expected one of {}", Congestion::NAMES.join(", "))),
        }
    }
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Congestion::Cubic => "cubic",
            Congestion::Reno => "reno",
            Congestion::None => "none",
            Congestion::SmoltcpCubic => "smoltcp-cubic",
            Congestion::SmoltcpReno => "smoltcp-reno",
        })
    }
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            addrs: Vec::new(),
            tcp_buffer: 64 * 1024,
            tcp_receive_max: 6 * 1024 * 1024,
            tcp_send_max: 4 * 1024 * 1024,
            udp_packets: 64,
            udp_buffer: 64 * 1024,
            reset_on_overflow: false,
            syn_cookies: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            gateways: Vec::new(),
            seed: None,
            congestion: Congestion::default(),
            loss_recovery: LossRecovery::default(),
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
    pub(crate) fn proto(self) -> Proto {
        match self {
            Type::Stream => Proto::Tcp,
            Type::Dgram => Proto::Udp,
        }
    }
}

/// A listener's queues (Linux's request queue and accept queue).
#[derive(Debug, Default)]
pub(crate) struct Listener {
    /// listen()'s backlog, clamped to [`SOMAXCONN`]. Up to `backlog + 1` connections wait
    /// in the accept queue, and up to `max(backlog, 1)` in the SYN queue, as in Linux.
    pub backlog: u32,
    /// Half-open connections: SYN received, SYN-ACK sent, waiting for the ACK.
    pub syn_queue: Vec<SocketHandle>,
    /// Established connections that accept() has not taken yet.
    pub accept_queue: VecDeque<SocketHandle>,
    /// SYNs dropped because a queue was full.
    pub syns_dropped: u64,
    /// Handshake-completing ACKs dropped because the accept queue was full.
    pub acks_dropped: u64,
    /// Handshake-completing ACKs answered with RST because the accept queue was full
    /// (reset_on_overflow).
    pub acks_reset: u64,
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

    /// More than half of the backlog waiting for accept().
    pub fn crowded(&self) -> bool {
        self.accept_queue.len() > self.backlog as usize / 2
    }
}

/// What a socket is, as the socket API sees it.
#[derive(Debug)]
enum SockState {
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
struct Entry {
    domain: Domain,
    ty: Type,
    /// Open handles (a `try_clone` is a dup): the socket closes when the last one does.
    refs: usize,
    nonblocking: bool,
    reuse_addr: bool,
    /// The bound local address, once bound (explicitly or implicitly).
    local: Option<SocketAddr>,
    state: SockState,
    /// shutdown(SHUT_RD) was called: recv() reports end of stream once nothing is queued.
    shut_read: bool,
    /// shutdown(SHUT_WR) was called on a UDP socket: send() gives EPIPE (TCP keeps this
    /// in the smoltcp socket's state).
    shut_write: bool,
    /// Linux's SS_CONNECTING: a TCP connect() started and no connect() call has reported
    /// its outcome yet (a non-blocking one returns EINPROGRESS; the next connect() after
    /// the handshake returns success or the error).
    connecting: bool,
    /// Datagrams dropped because this UDP socket's receive buffer was full.
    udp_dropped: u64,
    /// SO_RCVTIMEO and SO_SNDTIMEO: how long a blocking call waits before EAGAIN.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// The options its connections get ([`options`]).
    opts: options::SockOpts,
    /// IPV6_V6ONLY: an AF_INET6 socket that takes no IPv4.
    v6only: bool,
    /// SO_BROADCAST: a UDP socket may send to broadcast addresses.
    broadcast: bool,
}

impl Entry {
    fn new(domain: Domain, ty: Type) -> Entry {
        Entry {
            domain,
            ty,
            refs: 1,
            nonblocking: false,
            reuse_addr: false,
            local: None,
            state: SockState::Idle,
            shut_read: false,
            shut_write: false,
            connecting: false,
            udp_dropped: 0,
            read_timeout: None,
            write_timeout: None,
            opts: options::SockOpts::default(),
            v6only: false,
            broadcast: false,
        }
    }
}

/// A stack's protocol state; see the [module docs](self).
pub struct Engine {
    iface: Interface,
    /// Every smoltcp socket; smoltcp itself only ever sees one at a time (`one_socket`).
    /// Reached through [`Engine::tcp_mut`] and friends, which note what changed.
    sockets: one_socket::Sockets,
    /// Where smoltcp works on one socket at a time.
    single: one_socket::OneSocket,
    /// The sockets smoltcp must look at in the next poll: touched by the API or a packet.
    egress: Vec<Which>,
    /// When each socket next needs smoltcp (a retransmission, a delayed ACK, TIME-WAIT).
    timers: one_socket::Timers,
    /// When each connection's loss recovery next has something to do ([`recovery`]).
    recovery_timers: one_socket::Timers,
    /// Buffers for recovery's copies of segments in flight, reused.
    recovery_pool: egress::PacketPool,
    /// The UDP sockets' handles, with the socket each belongs to.
    udp_handles: HashMap<SocketHandle, SockId>,
    /// The memory of the TCP sockets' buffers. Declared after `sockets` and `single` (which
    /// may hold a socket swapped in), so that every socket is dropped before it (see
    /// [`buffers::BufferPool`]).
    buffers: buffers::BufferPool,
    config: StackConfig,
    /// The device's capabilities, as smoltcp sees them through the outbox.
    capabilities: DeviceCapabilities,
    /// The stack's own addresses, for loopback.
    local: Vec<IpAddr>,
    /// The time the driver last gave: what "now" is inside a call.
    now: Instant,
    /// Boxed, as [`Engine::conns`] is: an entry is some 260 bytes, and inline the table's
    /// empty slots cost as much as its entries (~150 bytes per connection at 10,000).
    entries: HashMap<SockId, Box<Entry>>,
    /// Boxed: a connection record is some 600 bytes, and a hash table holds up to twice
    /// as many slots as entries; inline, the empty slots cost as much as the records
    /// (the scale scenario's heap per connection grew by ~0.3 KiB when congestion
    /// control added ~150 bytes to `Conn`). Boxed, a slot is 16 bytes.
    conns: HashMap<SocketHandle, Box<Conn>>,
    /// TCP connections by 5-tuple: the demux table.
    demux: HashMap<TcpTuple, SocketHandle>,
    ports: Ports,
    /// Closed UDP sockets still sending what they had queued, with the port they hold.
    udp_draining: Vec<(SocketHandle, u16)>,
    /// Listening sockets by port, for the demux to find a SYN's listener without a scan.
    listeners: HashMap<u16, Vec<SockId>>,
    /// Bound UDP sockets by port, for the demux to name a datagram's socket.
    udp_ports: HashMap<u16, Vec<SockId>>,
    /// The demux's counters and recent decisions.
    demux_log: DemuxLog,
    /// Connections an API call changed (close, shutdown), looked at in the next poll.
    dirty: Vec<SocketHandle>,
    /// Work was done since the last sweep, which is due at `next_sweep`.
    sweep_owed: bool,
    next_sweep: Instant,
    /// The earliest time a connect() or a half-open connection may run out of time, or an
    /// idle connection's buffer pages are due to go back ([`idle_pages`]): a sweep is owed
    /// then even if nothing else happens, so that a timeout is noticed when it runs out,
    /// not at the connection's next retransmission (up to a minute later). Lowered when
    /// such a connection is made; each sweep recomputes it.
    next_timeout: Option<Instant>,
    /// Sockets whose readiness may have changed since the driver last asked
    /// ([`Engine::take_touched`]).
    touched: Vec<SockId>,
    /// A listener whose accept queue grew past half its backlog since the driver last
    /// asked ([`Engine::take_crowded`]).
    crowded: Option<SockId>,
    /// Bumped whenever the demux table changes (a connection, listener or UDP socket comes,
    /// goes or changes state), so a watcher can print it on every change.
    generation: u64,
    next_id: SockId,
    /// Packets the stack sent to its own addresses, to be received like the device's.
    loopback: VecDeque<Vec<u8>>,
    /// The most recent connections that are gone, oldest first (at most [`FINISHED_HISTORY`]).
    finished: VecDeque<Conn>,
    /// Packets for the device, for the driver to take.
    outbox: Outbox,
    /// IP fragments waiting for the rest of their datagram.
    fragments: reassembly::Reassembly,
    /// The key of RFC 6528 ISNs and SYN cookies.
    secret: isn::Secret,
    rng: random::Rng,
}

impl Engine {
    /// An engine with `config`, for a device with `capabilities` (an IP-medium device:
    /// TUN-like), starting at time `now`.
    pub fn new(config: StackConfig, capabilities: DeviceCapabilities, now: Instant) -> Result<Engine, String> {
        if capabilities.medium != phy::Medium::Ip {
            return Err("ustack needs an IP-medium (TUN-like) device".into());
        }
        let mut rng = random::Rng::new(config.seed.unwrap_or_else(random::from_os));
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = rng.next_u64();
        let mut iface = Interface::new(iface_config, &mut ProbeOnly(&capabilities), now);
        let mut too_many = false;
        iface.update_ip_addrs(|addrs| {
            for cidr in &config.addrs {
                too_many |= addrs.push((*cidr).into()).is_err();
            }
        });
        if too_many {
            return Err("too many addresses for one interface".into());
        }
        for &gateway in &config.gateways {
            let added = match gateway {
                IpAddr::V4(v4) => iface.routes_mut().add_default_ipv4_route(v4).map(|_| ()),
                IpAddr::V6(v6) => iface.routes_mut().add_default_ipv6_route(v6).map(|_| ()),
            };
            added.map_err(|_| format!("gateway {gateway}: no room for another route"))?;
        }
        let hasher = foldhash::fast::FixedState::with_seed(rng.next_u64());
        let secret = isn::Secret::from_keys(rng.next_u64(), rng.next_u64());
        Ok(Engine {
            iface,
            sockets: one_socket::Sockets::new(),
            single: one_socket::OneSocket::new(),
            egress: Vec::new(),
            timers: one_socket::Timers::default(),
            recovery_timers: one_socket::Timers::default(),
            recovery_pool: egress::PacketPool::default(),
            udp_handles: HashMap::default(),
            buffers: buffers::BufferPool::new(
                config.tcp_buffer.max(config.tcp_receive_max),
                config.tcp_buffer.max(config.tcp_send_max),
            ),
            local: config.addrs.iter().map(|cidr| cidr.addr()).collect(),
            config,
            capabilities,
            now,
            entries: HashMap::default(),
            conns: HashMap::default(),
            demux: HashMap::with_hasher(hasher),
            ports: Ports::default(),
            listeners: HashMap::default(),
            udp_ports: HashMap::default(),
            demux_log: DemuxLog::default(),
            generation: 0,
            dirty: Vec::new(),
            sweep_owed: false,
            next_sweep: Instant::ZERO,
            next_timeout: None,
            touched: Vec::new(),
            crowded: None,
            udp_draining: Vec::new(),
            next_id: 3, // 0, 1 and 2 are stdin, stdout and stderr; start where a process's sockets would
            loopback: VecDeque::new(),
            finished: VecDeque::new(),
            outbox: Outbox::default(),
            fragments: reassembly::Reassembly::default(),
            secret,
            rng,
        })
    }

    /// How the engine was set up.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// The device's MTU: the largest IP packet the stack sends.
    pub fn mtu(&self) -> usize {
        self.capabilities.max_transmission_unit
    }

    /// A snapshot of the demux table: listeners with their queues, connections with their
    /// states, bound UDP sockets, and the demux's counters.
    pub fn demux_table(&self) -> DemuxTable {
        self.table()
    }

    /// The demux's most recent decisions (up to [`demux::HISTORY`]), oldest first.
    pub fn demux_events(&self) -> impl Iterator<Item = &DemuxEvent> {
        self.demux_log.recent.iter()
    }

    /// The demux's counters.
    pub fn demux_counters(&self) -> DemuxCounters {
        self.demux_log.counters
    }

    /// What became of the IP fragments that arrived, and what reassembly holds now (bytes,
    /// datagrams).
    pub fn reassembly(&self) -> (reassembly::ReassemblyCounters, usize, usize) {
        (self.fragments.counters, self.fragments.bytes(), self.fragments.datagrams())
    }

    /// A number that changes whenever the demux table does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many TCP connections the engine holds (open, half-open, or closing).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// How many connections have sent a FIN that is not yet acknowledged: what a process's
    /// exit waits for ([`crate::Stack::shutdown`]).
    pub fn unacknowledged_fins(&self) -> usize {
        self.conns
            .keys()
            .filter(|&&h| {
                matches!(self.tcp(h).state(), tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck)
            })
            .count()
    }

    /// The handshake and close of every connection the engine holds and of the most recent
    /// ones that are gone (up to [`FINISHED_HISTORY`]), ordered by when they started.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut all: Vec<ConnectionInfo> =
            self.finished.iter().chain(self.conns.values().map(|c| &**c)).map(Conn::info).collect();
        all.sort_by(|a, b| {
            a.started_ms
                .total_cmp(&b.started_ms)
                .then(a.tuple.local.cmp(&b.tuple.local))
                .then(a.tuple.remote.cmp(&b.tuple.remote))
        });
        all
    }

    /// Takes an arriving frame: the demux decides what it is for, and smoltcp processes it
    /// (or not). The frame may be rewritten in place on the way.
    pub fn ingress(&mut self, now: Instant, frame: &mut Vec<u8>) {
        self.now = now;
        self.sweep_owed = true;
        // A fragment waits for its datagram, which then goes through the demux whole.
        match self.fragments.offer(now, frame) {
            reassembly::Offer::NotFragment => {}
            // A device that vouches for TCP checksums (a TUN with offloads) could not for
            // the fragments: the datagram's is verified here, as smoltcp then will not.
            reassembly::Offer::Whole(datagram)
                if !self.capabilities.checksum.tcp.rx() && !reassembly::tcp_checksum_ok(&datagram) =>
            {
                let what = "reassembled TCP segment with a bad checksum: dropped";
                self.demux_log.record(DemuxEvent {
                    at_ms: now.total_millis() as u64,
                    flow: None,
                    decision: Decision::Other(what),
                });
                return;
            }
            reassembly::Offer::Whole(datagram) => *frame = datagram,
            reassembly::Offer::Held { src, dst, what } => {
                let flow = PacketEnds { proto: "ip", local: SocketAddr::new(dst, 0), remote: SocketAddr::new(src, 0) };
                let event =
                    DemuxEvent { at_ms: now.total_millis() as u64, flow: Some(flow), decision: Decision::Other(what) };
                self.demux_log.record(event);
                return;
            }
        }
        // An echo request whose reply must go in IPv6 fragments: smoltcp would drop the
        // reply, so ustack answers it (`fragment`).
        if let Some(reply) = fragment::echo_reply_ipv6(frame, self.mtu())
            && Ipv6Packet::new_checked(&reply[..]).is_ok_and(|ip| self.is_local(IpAddr::V6(ip.src_addr())))
        {
            self.send_ipv6(reply);
            return;
        }
        let (disposition, target) = demux::admit(self, frame, now);
        let which = match target {
            Some(demux::Target::Tcp(handle)) => Some(Which::Tcp(handle)),
            Some(demux::Target::Udp { handle, .. }) => Some(Which::Udp(handle)),
            None => None,
        };
        let udp_queued = match target {
            Some(demux::Target::Udp { handle, .. }) => self.udp(handle).recv_queue(),
            _ => 0,
        };
        match disposition {
            Disposition::Drop => {}
            Disposition::Reply(packet) => self.transmit_own(&packet),
            Disposition::Deliver => self.deliver(which, frame),
            Disposition::First(first) => {
                self.deliver(which, &first);
                self.deliver(which, frame);
            }
            Disposition::Admit(handle) => {
                self.deliver(Some(Which::Tcp(handle)), frame);
                demux::settle(self, handle);
            }
            Disposition::Cookie { handle, syn, offset } => {
                self.deliver(Some(Which::Tcp(handle)), &syn);
                self.observe(handle, now);
                // smoltcp answers the replayed SYN; the transmit path drops that SYN-ACK
                // and learns the shift from it.
                let which = Some(Which::Tcp(handle)).filter(|&w| self.is_live(w));
                self.with_one(which, |iface, set, out| {
                    while iface.poll_egress(now, out, set) == smoltcp::iface::PollResult::SocketStateChanged {}
                });
                match self.conns.get(&handle).and_then(|c| c.shift) {
                    Some(shift) => {
                        rewrite::incoming(frame, offset, shift);
                        self.deliver(Some(Which::Tcp(handle)), frame);
                    }
                    None => {
                        log::warn!(target: "ustack::backlog", "SYN cookie connection {handle}: smoltcp sent no SYN-ACK");
                        demux::forget_half_open(self, handle);
                    }
                }
            }
        }
        match target {
            Some(demux::Target::Tcp(handle)) => self.observe(handle, now),
            // smoltcp drops a datagram that does not fit without a word; count it.
            // It drops a damaged one as silently: that is not the buffer's doing.
            Some(demux::Target::Udp { socket, handle, len })
                if len > 0 && self.udp(handle).recv_queue() == udp_queued && demux::udp_checksums_ok(frame) =>
            {
                self.demux_log.counters.udp_dropped += 1;
                if let Some(Entry { udp_dropped, .. }) = self.entries.get_mut(&socket).map(|e| &mut **e) {
                    *udp_dropped += 1;
                }
                log::debug!(target: "ustack::demux", "UDP socket #{socket}: receive buffer full, datagram dropped");
            }
            _ => {}
        }
    }

    /// Lets the engine do what is due at `now`: take the packets it sent itself, send
    /// what the API and arriving packets made ready, run timers (retransmissions, TIME-WAIT,
    /// connect and half-open timeouts). Returns when it next wants to be polled: `now` if
    /// it has more to do at once (the outbox filled up, more looped-back packets), a later
    /// time for its next timer, None if nothing is pending. Sent packets wait in
    /// [`Engine::outbox`].
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        self.now = now;
        for _ in 0..LOOPBACK_BATCH {
            let Some(mut frame) = self.loopback.pop_front() else { break };
            self.ingress(now, &mut frame);
        }
        self.iface.poll_maintenance(now);
        self.fragments.expire(now);
        self.recover(now);
        // Egress for the sockets packets or the API touched and those whose timer is due,
        // one at a time; each one's next deadline is noted for later polls.
        self.timers.take_due(now, &mut self.egress);
        let mut sent = false;
        let mut egress = std::mem::take(&mut self.egress);
        egress.sort_unstable();
        egress.dedup();
        let mut rest = egress.len();
        for (i, &which) in egress.iter().enumerate() {
            if self.outbox.is_full() {
                rest = i;
                break;
            }
            if !self.is_live(which) {
                continue;
            }
            let mut sent_here = false;
            let at = self.with_one(Some(which), |iface, set, out| {
                while iface.poll_egress(now, out, set) == smoltcp::iface::PollResult::SocketStateChanged {
                    sent_here = true;
                }
                iface.poll_at(now, set)
            });
            self.timers.set(which, at);
            sent |= sent_here;
            // What it sent may have made room in its buffer (UDP), or ended it (a RST,
            // TIME-WAIT over): its waiters look. An API call that gave smoltcp nothing to
            // send wakes nobody, so a waiter's own calls cannot keep waking it.
            if sent_here {
                self.touch(which);
            }
            if let Which::Tcp(handle) = which {
                self.observe(handle, now);
                self.arm_recovery(handle);
            }
        }
        let fragments_left = self.send_fragments();
        // Sockets not reached because the outbox filled wait for the next poll.
        self.egress.extend_from_slice(&egress[rest..]);
        egress.clear();
        if self.egress.is_empty() {
            self.egress = egress;
        }
        self.sweep_owed |= sent || !self.dirty.is_empty() || self.next_timeout.is_some_and(|at| at <= now);
        self.reap(now);
        if !self.loopback.is_empty() || !self.egress.is_empty() || fragments_left {
            return Some(now);
        }
        let sweep = self.sweep_owed.then_some(self.next_sweep.max(now));
        let timeout = self.next_timeout.map(|at| at.max(self.next_sweep).max(now));
        let recovery = self.recovery_timers.next().map(|at| at.max(now));
        [self.timers.next().map(|at| at.max(now)), recovery, sweep, timeout].into_iter().flatten().min()
    }

    /// Runs the loss recovery timers that are due ([`recovery`]).
    fn recover(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.recovery_timers.take_due(now, &mut due);
        for which in due {
            let Which::Tcp(handle) = which else { continue };
            let Some(conn) = self.conns.get_mut(&handle) else { continue };
            let before = (conn.recovery.counters(), conn.recovery.backoff());
            let lost = conn.recovery.on_timer(now);
            let timed_out = conn.recovery.counters().timeout > before.0.timeout;
            if timed_out && give_up::retries_exhausted(conn, now, before.1 == 0) {
                log::info!(target: "ustack::recovery", "{}: no ACK for {:?} of retransmissions: ETIMEDOUT", conn.tuple, give_up::RETRIES2_TIMEOUT);
                conn.pending_error.get_or_insert(Errno::ETIMEDOUT);
                conn.gave_up = true;
                conn.recovery.release();
                self.tcp_mut(handle).abort();
                self.egress.push(which);
                self.touch(which);
                self.observe(handle, now);
                continue;
            }
            resend(conn, &lost, &mut self.outbox);
            congestion_on_timer(conn, before.0, timed_out, now);
            self.arm_recovery(handle);
        }
    }

    /// Sets connection `handle`'s recovery timer from its recovery's deadline.
    fn arm_recovery(&mut self, handle: SocketHandle) {
        let at = self.conns.get(&handle).and_then(|c| c.recovery.deadline());
        self.recovery_timers.set(Which::Tcp(handle), at);
    }

    /// The packets the engine sent, for the driver to write to the device and then
    /// [`Outbox::clear`]. A driver that writes outside a lock swaps in an empty outbox
    /// of its own instead ([`std::mem::swap`]).
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// The sockets whose readiness may have changed since the last call, each once at
    /// least (a driver wakes the callers waiting on them).
    pub fn take_touched(&mut self, into: &mut Vec<SockId>) {
        into.append(&mut self.touched);
    }

    /// A listener whose accept queue grew past half its backlog since the last call: the
    /// application accepts more slowly than handshakes complete, and the queue may fill
    /// (then SYNs are dropped). A driver that takes SYNs in faster than its application
    /// runs can give the application a turn (see `stack::run`).
    pub fn take_crowded(&mut self) -> Option<SockId> {
        self.crowded.take()
    }

    /// Whether listener `id`'s accept queue is still past a quarter of its backlog: an
    /// application that was behind has not caught up yet.
    pub fn still_crowded(&self, id: SockId) -> bool {
        match self.entries.get(&id).map(|e| &**e) {
            Some(Entry { state: SockState::Listening(l), .. }) => l.accept_queue.len() > l.backlog as usize / 4,
            _ => false,
        }
    }

    /// Whether something is waiting to be sent that only [`Engine::poll`] sends: a socket
    /// call made data or a connection ready. A driver wakes its poller when this is true
    /// after a call.
    pub fn wants_poll(&self) -> bool {
        // The outbox too: a call may put IPv6 fragments there (`send_to`).
        !self.egress.is_empty() || !self.dirty.is_empty() || !self.loopback.is_empty() || !self.outbox.is_empty()
    }

    /// Runs `f` with smoltcp's interface, a socket set holding `which` alone (or nothing:
    /// `which` must be live), and the transmit path.
    fn with_one<R>(
        &mut self,
        which: Option<Which>,
        f: impl FnOnce(&mut Interface, &mut SocketSet<'static>, &mut Egress<'_>) -> R,
    ) -> R {
        // Built from disjoint parts of the engine, so smoltcp can hold the interface and
        // the sockets at the same time.
        let mut out = Egress {
            capabilities: &self.capabilities,
            local: &self.local,
            queue: &mut self.loopback,
            outbox: &mut self.outbox,
            seq: egress::SeqNumbers {
                conns: &mut self.conns,
                demux: &self.demux,
                secret: &self.secret,
                now: self.now,
                recovery: self.config.loss_recovery == LossRecovery::Ustack,
                pool: &mut self.recovery_pool,
            },
        };
        let iface = &mut self.iface;
        self.single.with(&mut self.sockets.set, which, |set| f(iface, set, &mut out))
    }

    /// Sends a packet ustack built itself (in smoltcp's numbering) through the transmit
    /// path, as smoltcp's own go: shifted to the wire's numbering, recorded, into the outbox.
    fn transmit_own(&mut self, packet: &[u8]) {
        let now = self.now;
        self.with_one(None, |_, _, out| {
            if let Some(token) = phy::Device::transmit(out, now) {
                phy::TxToken::consume(token, packet.len(), |buf| buf.copy_from_slice(packet));
            }
        });
    }

    /// smoltcp processes `frame` with socket `which` (or none) in its set; `which` is then
    /// scheduled for egress and its waiters touched.
    fn deliver(&mut self, which: Option<Which>, frame: &[u8]) {
        let now = self.now;
        let which = which.filter(|&w| self.is_live(w));
        if let Some(w) = which {
            self.egress.push(w);
            self.touch(w);
        }
        let (queued_before, sent_before) = match which {
            Some(Which::Tcp(handle)) => (self.tcp(handle).recv_queue(), self.conns.get(&handle).and_then(|c| c.sent)),
            _ => (0, None),
        };
        self.with_one(which, |iface, set, out| iface.poll_ingress_single(now, &mut OneFrame::new(frame, out), set));
        if let Some(Which::Tcp(handle)) = which {
            let queued = self.tcp(handle).recv_queue().saturating_sub(queued_before);
            let conn = self.conns.get_mut(&handle);
            let at = conn.and_then(|conn| {
                // smoltcp answers a frame (if at all) after taking its data in: an answer
                // sent on the way already acknowledged that data.
                if conn.sent == sent_before {
                    conn.received_since_sent = conn.received_since_sent.wrapping_add(queued as u32);
                }
                conn.recovery.deadline()
            });
            self.recovery_timers.set(Which::Tcp(handle), at);
        }
        self.send_fragments();
    }

    /// Sends the rest of a datagram smoltcp fragmented (an IPv4 echo reply or UDP datagram
    /// larger than the MTU): it sends the first fragment at once and one more per
    /// `poll_egress`, and says it has more by wanting to be polled at time zero. Returns
    /// whether some are still to be sent (the outbox was full).
    fn send_fragments(&mut self) -> bool {
        let now = self.now;
        self.with_one(None, |iface, set, out| {
            // A 64 KiB datagram is 45 fragments over a 1500-byte MTU.
            for _ in 0..64 {
                if iface.poll_at(now, set) != Some(Instant::ZERO) {
                    return false;
                }
                iface.poll_egress(now, out, set);
            }
            iface.poll_at(now, set) == Some(Instant::ZERO)
        })
    }

    /// Sends an IPv6 packet built by ustack (not smoltcp): whole through the loopback
    /// queue to one of the stack's own addresses, as Linux's `lo` (MTU 65,536) takes it;
    /// otherwise in fragments fitting the MTU ([`fragment`]) straight to the outbox, or
    /// not at all when the outbox is full, as Linux drops a packet its device queue has
    /// no room for.
    fn send_ipv6(&mut self, packet: Vec<u8>) {
        let Ok(ip) = Ipv6Packet::new_checked(&packet[..]) else { return };
        if self.is_local(IpAddr::V6(ip.dst_addr())) {
            self.loopback.push_back(packet);
            return;
        }
        let ident = self.rng.next_u32();
        let Some(fragments) = fragment::fragment_ipv6(&packet, self.mtu(), ident) else { return };
        if !self.outbox.is_full() {
            for f in fragments {
                self.outbox.push(&egress::Packet::new(f));
            }
        }
    }

    /// A new socket number.
    fn new_id(&mut self) -> SockId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether a `ty` socket may send to `dst`: ENETUNREACH or EACCES as Linux says
    /// ([`route`]).
    fn route(&self, dst: IpAddr, ty: Type, may_broadcast: bool) -> Result<(), Errno> {
        route::check(&self.config.addrs, &self.config.gateways, dst, ty, may_broadcast)
    }

    /// Whether `addr` is one of the stack's addresses.
    fn is_local(&self, addr: IpAddr) -> bool {
        self.local.contains(&addr)
    }

    /// Adds `socket`, made by `self.buffers.tcp_socket()` with `slot`, to the socket set.
    fn add_tcp_socket(&mut self, mut socket: tcp::Socket<'static>, slot: buffers::Slot) -> SocketHandle {
        socket.set_congestion_control(self.config.congestion.smoltcp_controller(self.config.loss_recovery));
        let handle = self.sockets.add(socket);
        self.buffers.register(handle, slot);
        self.egress.push(Which::Tcp(handle));
        handle
    }

    /// Adds UDP socket `socket` of the API's socket `id` to the socket set.
    fn add_udp_socket(&mut self, socket: udp::Socket<'static>, id: SockId) -> SocketHandle {
        let handle = self.sockets.add(socket);
        self.udp_handles.insert(handle, id);
        handle
    }

    /// Removes a socket from the set and frees it, buffers and all.
    fn remove_socket(&mut self, handle: SocketHandle) {
        // Put a swapped-in socket back, so the set's own copy is what gets removed.
        self.single.hold(&mut self.sockets.set, None);
        drop(self.sockets.remove(handle));
        // SAFETY: the only socket using the handle's buffers was just dropped.
        unsafe { self.buffers.release_for(handle) };
        let which = if self.udp_handles.remove(&handle).is_some() { Which::Udp(handle) } else { Which::Tcp(handle) };
        self.timers.forget(which);
        self.recovery_timers.forget(which);
    }

    /// TCP socket `handle`.
    fn tcp(&self, handle: SocketHandle) -> &tcp::Socket<'static> {
        self.single.get(&self.sockets.set, Which::Tcp(handle))
    }

    /// TCP socket `handle`, to change: smoltcp looks at it in the next poll.
    fn tcp_mut(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.egress.push(Which::Tcp(handle));
        self.single.get_mut(&mut self.sockets.set, Which::Tcp(handle))
    }

    /// UDP socket `handle`.
    fn udp(&self, handle: SocketHandle) -> &udp::Socket<'static> {
        self.single.get(&self.sockets.set, Which::Udp(handle))
    }

    /// UDP socket `handle`, to change: smoltcp looks at it in the next poll.
    fn udp_mut(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.egress.push(Which::Udp(handle));
        self.single.get_mut(&mut self.sockets.set, Which::Udp(handle))
    }

    /// UDP socket `handle`, to take received datagrams from. That gives smoltcp nothing
    /// to send, so unlike [`Engine::udp_mut`] it schedules no egress for the socket.
    fn udp_receiving(&mut self, handle: SocketHandle) -> &mut udp::Socket<'static> {
        self.single.get_mut(&mut self.sockets.set, Which::Udp(handle))
    }

    /// Whether `which` is still a socket of the set.
    fn is_live(&self, which: Which) -> bool {
        match which {
            Which::Tcp(h) => self.conns.contains_key(&h),
            Which::Udp(h) => self.udp_handles.contains_key(&h),
        }
    }

    /// Notes that socket `which`'s waiting callers (if any) are to be woken.
    fn touch(&mut self, which: Which) {
        let id = match which {
            Which::Tcp(h) => self.conns.get(&h).and_then(|c| c.owner.socket()),
            Which::Udp(h) => self.udp_handles.get(&h).copied(),
        };
        self.touched.extend(id);
    }

    /// Registers a TCP connection in the demux table.
    fn add_conn(&mut self, handle: SocketHandle, tuple: TcpTuple, owner: Owner, state: tcp::State) {
        self.demux.insert(tuple, handle);
        let mut conn = Conn::new(tuple, owner, state, self.now);
        conn.cc = self.config.congestion.ustack_algorithm(self.config.loss_recovery).map(congestion::Controller::new);
        // SO_RCVBUF and SO_SNDBUF fix their buffers (Linux's SOCK_RCVBUF_LOCK and
        // SOCK_SNDBUF_LOCK): only a default buffer grows.
        let opts = owner.socket().and_then(|id| self.entries.get(&id)).map(|e| e.opts).unwrap_or_default();
        let tcp = self.tcp(handle);
        conn.rcv_buffer = u32::try_from(tcp.recv_capacity()).unwrap_or(u32::MAX);
        if opts.recv_buffer.is_none() {
            conn.rcv_window = rcv_window::RcvWindow::new(tcp.recv_capacity(), self.config.tcp_buffer, self.now);
        }
        if opts.send_buffer.is_none() {
            conn.snd_buffer = snd_buffer::SndBuffer::new(tcp.send_capacity(), self.config.tcp_buffer);
        }
        if let Some(at) = self.runs_out(&conn) {
            self.next_timeout = Some(self.next_timeout.map_or(at, |next| next.min(at)));
        }
        self.conns.insert(handle, Box::new(conn));
        self.generation += 1;
    }

    /// When `conn` runs out of time if it stays as it is: a connect() in SYN-SENT at the
    /// connect timeout, a listener's half-open connection at [`HALF_OPEN_TIMEOUT`].
    fn runs_out(&self, conn: &Conn) -> Option<Instant> {
        let limit = match (conn.state, conn.owner) {
            (tcp::State::SynSent, _) => self.config.connect_timeout,
            (tcp::State::Listen | tcp::State::SynReceived, Owner::Listener(_)) => HALF_OPEN_TIMEOUT,
            _ => return None,
        };
        Some(conn.born + smoltcp::time::Duration::from(limit))
    }

    /// Records the state smoltcp's socket for `handle` is in now, and acts on it: a
    /// completed handshake moves to its listener's accept queue, a finished connection is
    /// freed. Called right after each packet for the connection (so every transition is
    /// seen, and a half-open connection a RST sent back to LISTEN is gone before it can
    /// catch another client's SYN), for connections the API touched, and in the sweep.
    fn observe(&mut self, handle: SocketHandle, now: Instant) {
        let Some(conn) = self.conns.get_mut(&handle) else { return };
        let socket: &tcp::Socket = self.single.get(&self.sockets.set, Which::Tcp(handle));
        let state = socket.state();
        let finished = is_finished(socket);
        if conn.advance(state, now) {
            self.generation += 1;
            self.touched.extend(conn.owner.socket());
            // A completed handshake moves from the SYN queue to the accept queue at once, so
            // the next packet's accept-queue check counts it.
            let past_handshake = !matches!(state, tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed);
            if let (Owner::Listener(id), true) = (conn.owner, past_handshake)
                && let Some(Entry { state: SockState::Listening(l), .. }) = self.entries.get_mut(&id).map(|e| &mut **e)
                && let Some(pos) = l.syn_queue.iter().position(|&h| h == handle)
            {
                l.syn_queue.swap_remove(pos);
                l.accept_queue.push_back(handle);
                self.touched.push(id);
                if l.crowded() {
                    self.crowded = Some(id);
                }
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
                if let Some(Entry { state: SockState::Listening(l), .. }) = self.entries.get_mut(&id).map(|e| &mut **e)
                {
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
    fn free_conn(&mut self, handle: SocketHandle) {
        self.generation += 1;
        if let Some(mut conn) = self.conns.remove(&handle) {
            if self.finished.len() == FINISHED_HISTORY {
                self.finished.pop_front();
            }
            self.touched.extend(conn.owner.socket());
            self.demux.remove(&conn.tuple);
            if conn.holds_port {
                self.ports.release(Proto::Tcp, conn.tuple.local.port(), Holder::Connection(handle));
            }
            // Kept as it is: rendering its timeline (strings) waits until somebody asks.
            conn.syn_ack = None;
            conn.recovery.release();
            self.finished.push_back(*conn);
        }
        self.remove_socket(handle);
    }

    /// After a poll's work: looks at the connections the API touched, lets closed UDP
    /// sockets go once drained, and — at most every [`SWEEP_INTERVAL`], when work was done
    /// since the last time or a connect or half-open timeout may have run out — sweeps
    /// every connection for what timers change (TIME-WAIT ending, retransmissions giving
    /// up, connect and half-open timeouts).
    fn reap(&mut self, now: Instant) {
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

    /// Every connection: timeouts first, then what its state says, then whether its buffers'
    /// pages can go back. Notes when the next timeout may run out.
    fn sweep(&mut self, now: Instant) {
        let connect_timeout = smoltcp::time::Duration::from(self.config.connect_timeout);
        let half_open_timeout = smoltcp::time::Duration::from(HALF_OPEN_TIMEOUT);
        let handles: Vec<SocketHandle> = self.conns.keys().copied().collect();
        let mut next_timeout = None;
        for handle in handles {
            let Some(conn) = self.conns.get_mut(&handle) else { continue };
            let age = now - conn.born;
            match (conn.state, conn.owner) {
                (tcp::State::SynSent, _) if age >= connect_timeout => {
                    log::info!(target: "ustack::handshake", "{}: no answer to the SYN, connect() timed out", conn.tuple);
                    conn.pending_error.get_or_insert(Errno::ETIMEDOUT);
                    // Given up without a RST, as Linux's tcp_write_err.
                    conn.gave_up = true;
                    self.tcp_mut(handle).abort();
                }
                (tcp::State::SynReceived, Owner::Listener(_)) if age >= half_open_timeout => {
                    log::info!(target: "ustack::backlog", "{}: half-open for {HALF_OPEN_TIMEOUT:?}, dropped", conn.tuple);
                    self.tcp_mut(handle).abort();
                }
                _ => {}
            }
            self.observe(handle, now);
            let trim = self.trim_if_idle(handle, now);
            let runs_out = self.conns.get(&handle).and_then(|conn| self.runs_out(conn));
            for at in [runs_out, trim].into_iter().flatten() {
                next_timeout = Some(next_timeout.map_or(at, |next: Instant| next.min(at)));
            }
        }
        self.next_timeout = next_timeout;
    }
}

/// Whether a TCP socket is done for good: closed, with no RST left to send (an aborted
/// socket keeps its endpoints until its RST has gone out).
fn is_finished(socket: &tcp::Socket) -> bool {
    socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none()
}

/// A device that only tells smoltcp its capabilities, for making the interface.
struct ProbeOnly<'a>(&'a DeviceCapabilities);

impl phy::Device for ProbeOnly<'_> {
    type RxToken<'b>
        = egress::NoRx
    where
        Self: 'b;
    type TxToken<'b>
        = egress::NoTx
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.0.clone()
    }
}

/// What a recovery timer did, told to the connection's congestion control: a timeout,
/// or losses the reordering timer found (`before`: recovery's counters before it ran).
fn congestion_on_timer(conn: &mut Conn, before: recovery::RecoveryCounters, timed_out: bool, now: Instant) {
    let (Some(cc), Some(sent_max)) = (conn.cc.as_mut(), conn.sent_max) else { return };
    if timed_out {
        cc.on_timeout(sent_max);
        log::debug!(target: "ustack::congestion", "{}: retransmission timeout: {cc:?}", conn.tuple);
    } else if conn.recovery.counters().fast > before.fast
        && let Some(ack) = conn.snd_una
    {
        let resent = (conn.recovery.counters().bytes - before.bytes) as u32;
        let pipe = conn.recovery.unsacked_bytes();
        let srtt = conn.recovery.srtt();
        let sample = congestion::AckSample { ack, delivered: 0, pipe, resent, loss: true, sent_max, srtt };
        cc.on_ack(now, sample);
    }
}

/// Sends recovery's segments `lost` of `conn` again, with the acknowledgment and window
/// ustack last sent.
fn resend(conn: &mut Conn, lost: &[usize], outbox: &mut Outbox) {
    let Some(LastSent { ack, window, .. }) = conn.sent else { return };
    for &i in lost {
        outbox.push(conn.recovery.resend(i, ack, window));
    }
    if !lost.is_empty() {
        log::debug!(target: "ustack::recovery", "{}: {} segment(s) resent ({:?})", conn.tuple, lost.len(), conn.recovery.counters());
    }
}
