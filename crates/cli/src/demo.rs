//! `ustack demo`: a narrated tour of TCP and UDP through ustack's socket API, for someone
//! learning how sockets work. It needs no setup and never touches the host's network.
//!
//! The server is always ustack (this process, through [`Socket`]). The client is the Linux
//! kernel, over a TUN inside a network namespace made for the demo, when the process may
//! create one (root); otherwise a second ustack stack joined by the in-memory wire. The
//! [`Client`] trait is the seam between the two: the tour itself is written once.

use std::fmt::Display;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use smoltcp::wire::{IpAddress, IpCidr};
use ustack::device::{Wire, trace};
use ustack::packet::{TcpdumpFormatter, TimeFormat};
use ustack::sys::NetNs;
use ustack::{Domain, Errno, Socket, Stack, StackConfig, Type};
use ustack_testkit::lab::{LabNet, TUN_NAME};

use super::Failure;
use super::args::{PcapFile, TapArgs, start_tapped};
use ustack::device::FaultConfig;

/// Every blocking call of the tour gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The whole tour gives up after this long (it normally takes well under a second).
const WATCHDOG: Duration = Duration::from_secs(25);
/// How long to wait for a state the other side is about to reach (an ACK in flight).
const SETTLE: Duration = Duration::from_secs(1);

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
const ECHO_PORT: u16 = 7;
const CLOSED_PORT: u16 = 9;
/// Width the explanations are wrapped to.
const WIDTH: usize = 88;

#[derive(Debug, Args)]
#[command(after_long_help = "\
Takes well under a second and exits 0. As root, a real Linux kernel is the client: it talks to
ustack over a TUN device inside a network namespace that the demo creates and that
vanishes with it (the host's network is not touched). Otherwise two ustack stacks talk
over an in-memory wire. The lines marked `·` are ustack's own logs (RUST_LOG changes
what is shown).

--trace shows every packet of the server stack (ustack at 10.7.0.2) inline, as tcpdump -nn
prints it with times since the first packet, each arriving one followed by ustack's demux
decision for it; --pcap FILE records the same packets for tcpdump -nn -r FILE or Wireshark.
Without a TUN they are the packets on the in-memory wire.")]
pub struct DemoArgs {
    #[command(flatten)]
    pub taps: TapArgs,

    /// Use two ustack stacks over the in-memory wire even when a TUN is available.
    #[arg(long)]
    pub wire: bool,
}

/// The demo's logs go to stdout, inline with the narration, as `· target: message`;
/// packet trace lines (--trace) as `· in  0.000123 IP ...`, their direction first.
pub fn init_logging(trace: bool) {
    let default = if trace {
        // Every packet, and after each arriving one the demux's decision for it.
        "warn,ustack::handshake=info,ustack::backlog=info,ustack::demux=trace,ustack::trace=info"
    } else {
        "warn,ustack::handshake=info,ustack::backlog=info,ustack::demux=info"
    };
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    if trace {
        // As in serve and connect: --trace shows the packets whatever RUST_LOG says.
        builder.filter_module(trace::TARGET, log::LevelFilter::Info);
    }
    builder
        .target(env_logger::Target::Stdout)
        .format(|buf, record| {
            if record.target() == trace::TARGET {
                return writeln!(buf, "           · {}", record.args());
            }
            let target = record.target().strip_prefix("ustack::").unwrap_or(record.target());
            writeln!(buf, "           · {target}: {}", record.args())
        })
        .init();
}

pub fn run(args: DemoArgs) -> Result<(), Failure> {
    start_watchdog();
    let started = Instant::now();
    let mut pcap = args.taps.open_pcap()?;
    say!("ustack demo: TCP and UDP through a userspace stack, step by step.");
    say!();
    let world = World::new(args.wire, args.taps.faults(), &mut pcap)?;
    world.introduce(&args.taps);
    tour(&world)?;
    say!();
    say!("Done in {}: handshake, echo, UDP, ECONNREFUSED and close.", ms(started.elapsed()));
    if let Some(path) = &args.taps.pcap {
        say!("The server stack's packets are in {0}: tcpdump -nn -r {0}", path.display());
    }
    // The binary that is running, so the commands work straight after `cargo run`.
    let me = std::env::current_exe().map_or_else(|_| "ustack".into(), |p| p.display().to_string());
    say!("Try it with your own tools (as root; the namespace keeps it off your real network):");
    say!("  ip netns add ustack && ip netns exec ustack {me} serve --tcp 7 --udp 7 &");
    say!(
        "  ip netns exec ustack python3 -c 'import socket; s = socket.create_connection((\"10.7.0.2\", 7)); s.sendall(b\"hello\"); print(s.recv(99))'"
    );
    say!("  kill %1; ip netns del ustack");
    Ok(())
}

/// Ends the process if the tour is stuck: every wait has a timeout, this is the backstop.
fn start_watchdog() {
    let _ = thread::Builder::new().name("watchdog".into()).spawn(|| {
        thread::sleep(WATCHDOG);
        complain!("ustack: demo: still running after {} s, giving up", WATCHDOG.as_secs());
        std::process::exit(1);
    });
}

/// Where the tour happens.
struct World {
    /// ustack, at 10.7.0.2: the server side, driven through the socket API.
    server: Stack,
    client: Box<dyn Client>,
    /// Why this mode was chosen.
    why: String,
}

impl World {
    /// The world, with the server stack's device tapped: traced, and recorded to `pcap`
    /// if it holds a file.
    fn new(force_wire: bool, faults: Option<FaultConfig>, pcap: &mut Option<PcapFile>) -> Result<World, Failure> {
        let why = if force_wire {
            "--wire was given".to_string()
        } else {
            match ustack::device::tun_support() {
                Ok(()) => match World::over_tun(faults.clone(), pcap) {
                    Ok(world) => return Ok(world),
                    Err(e) => format!("TUN devices seemed available, but setting one up failed: {e}"),
                },
                Err(reason) => reason,
            }
        };
        World::over_wire(why, faults, pcap)
    }

    fn over_tun(faults: Option<FaultConfig>, pcap: &mut Option<PcapFile>) -> Result<World, String> {
        let net = LabNet::ipv4(CLIENT_IP, SERVER_IP);
        let (ns, device) = net.open().map_err(|e| e.to_string())?;
        // Only fails where the wire would too (no thread), so losing `pcap` then is moot.
        let server =
            start_tapped(device, faults, pcap, formatter(), stack_config(SERVER_IP)).map_err(|e| e.to_string())?;
        Ok(World {
            server,
            client: Box::new(KernelClient { ns }),
            why: "this process may create network namespaces and TUN devices (it runs as root), \
                  so a real Linux kernel plays the client"
                .into(),
        })
    }

    fn over_wire(why: String, faults: Option<FaultConfig>, pcap: &mut Option<PcapFile>) -> Result<World, Failure> {
        let (a, b) = Wire::pair(1500).map_err(super::context("creating the in-memory wire"))?;
        let client = Stack::new(a, stack_config(CLIENT_IP)).map_err(super::context("starting stack A"))?;
        let server = start_tapped(b, faults, pcap, formatter(), stack_config(SERVER_IP))?;
        Ok(World { server, client: Box::new(UstackClient { stack: client }), why })
    }

    fn introduce(&self, taps: &TapArgs) {
        match self.client.kind() {
            ClientKind::Kernel => {
                say!("Mode: the Linux kernel and ustack, over a TUN device.");
                explain(&format!("Why: {}.", self.why));
                explain(&format!(
                    "The demo made a private network namespace with one TUN interface, {TUN_NAME}. \
                     The kernel's side of it has {CLIENT_IP}; ustack, in this process, is {SERVER_IP} \
                     and reads and writes the IP packets the kernel routes into the TUN. \
                     The namespace vanishes when the demo exits."
                ));
                explain(&format!(
                    "server = ustack at {SERVER_IP}, driven through its Berkeley socket API; \
                     client = the kernel at {CLIENT_IP}, through std::net in a thread inside the namespace."
                ));
            }
            ClientKind::Ustack => {
                say!("Mode: two ustack stacks, joined by an in-memory wire.");
                explain(&format!("Why: {}.", self.why));
                explain(
                    "So instead of the Linux kernel, a second ustack stack plays the client; the \
                     wire carries the same IP packets a TUN would. (As root, the demo uses a TUN \
                     and the real kernel.)",
                );
                explain(&format!(
                    "server = ustack stack B at {SERVER_IP}; client = ustack stack A at {CLIENT_IP}; \
                     both driven through the Berkeley socket API."
                ));
            }
        }
        explain(
            "Lines marked · are ustack's own logs: each connection as `tcp LOCAL <-> REMOTE` \
             from the logging stack's side, its RFC 9293 state changes, and its listen queues.",
        );
        if taps.trace {
            explain(&format!(
                "With --trace, `· in` and `· out` lines are the packets the server stack at {SERVER_IP} \
                 receives and sends, as tcpdump -nn prints them (seconds since the first packet; \
                 Flags [S] is a SYN, [S.] a SYN-ACK, [.] an ACK, [P.] data, [F.] a FIN, [R] a reset). \
                 After each packet a stack receives, `· demux:` says where its demux sent it."
            ));
        }
    }
}

fn cidr(ip: Ipv4Addr) -> IpCidr {
    IpCidr::new(IpAddress::Ipv4(ip), 24)
}

/// Trace lines in the demo: times since the first packet, which read better in a tour
/// than times of day.
fn formatter() -> TcpdumpFormatter {
    TcpdumpFormatter::new().time_format(TimeFormat::Relative)
}

fn stack_config(ip: Ipv4Addr) -> StackConfig {
    StackConfig { addrs: vec![cidr(ip)], ..StackConfig::default() }
}

/// The tour: five steps, each explained before it runs.
fn tour(world: &World) -> Result<(), Failure> {
    let client = world.client.as_ref();
    let echo = SocketAddr::new(IpAddr::V4(SERVER_IP), ECHO_PORT);

    heading(1, "TCP handshake: connect() meets accept()");
    explain(
        "A server asks for connections with socket(), bind() and listen(). A client's connect() \
         sends a SYN; the server's stack answers SYN-ACK; the client's ACK completes the \
         three-way handshake. All of that happens inside the two stacks: accept() only hands \
         the server a connection that is already established.",
    );
    let listener = Socket::new(&world.server, Domain::Inet, Type::Stream).map_err(step("socket"))?;
    listener.set_read_timeout(Some(TIMEOUT)).map_err(step("SO_RCVTIMEO"))?;
    listener.bind(echo).map_err(step("bind"))?;
    listener.listen(8).map_err(step("listen"))?;
    show(
        "server",
        format!(
            "socket(AF_INET, SOCK_STREAM) = #{}; bind({echo}); listen(backlog 8). State: {}",
            listener.id(),
            ustack_state(&listener)
        ),
    );
    show("client", format!("connect({echo}) ..."));
    let (connected, took) = client.connect(echo);
    let mut conn = connected.map_err(step("connect"))?;
    let client_addr = conn.local_addr().map_err(step("getsockname"))?;
    show("client", format!("connect() returned after {}: {client_addr} -> {echo}. State: {}", ms(took), conn.state()));
    let (accepted, peer) = listener.accept().map_err(step("accept"))?;
    accepted.set_read_timeout(Some(TIMEOUT)).map_err(step("SO_RCVTIMEO"))?;
    accepted.set_write_timeout(Some(TIMEOUT)).map_err(step("SO_SNDTIMEO"))?;
    let local = accepted.local_addr().map_err(step("getsockname"))?;
    show(
        "server",
        format!("accept() = #{}: local {local}, peer {peer}. State: {}", accepted.id(), ustack_state(&accepted)),
    );
    explain(&format!(
        "The client's port {} was picked by its stack from the ephemeral range; the server's is \
         the one it listens on. The two address:port pairs name the connection. The listening \
         socket stays in LISTEN, ready for the next client.",
        client_addr.port()
    ));

    heading(2, "Echo: TCP is a byte stream");
    explain(
        "send() hands bytes to the stack, which cuts them into segments as it sees fit; recv() \
         returns whatever has arrived — maybe several send()s at once, maybe part of one. TCP \
         keeps the order of the bytes, not the boundaries of the calls. The server here sends \
         back everything it reads.",
    );
    let message: &[u8] = b"hello, ustack!\n";
    let (first, second) = message.split_at(7);
    conn.send(first).map_err(step("send"))?;
    conn.send(second).map_err(step("send"))?;
    show("client", format!("send({}) and send({}): {} bytes in two calls", quote(first), quote(second), message.len()));
    let mut buf = [0u8; 1024];
    let mut got = 0;
    while got < message.len() {
        let n = accepted.recv(&mut buf[got..]).map_err(step("recv"))?;
        if n == 0 {
            return Err(Failure::new("demo: echo: the client closed early"));
        }
        show("server", format!("recv() = {n} bytes {}", quote(&buf[got..got + n])));
        got += n;
    }
    let mut sent = 0;
    while sent < got {
        sent += accepted.send(&buf[sent..got]).map_err(step("send"))?;
    }
    show("server", format!("send() = {sent} bytes back"));
    let mut back = [0u8; 1024];
    let mut got_back = 0;
    while got_back < message.len() {
        let n = conn.recv(&mut back[got_back..]).map_err(step("recv"))?;
        if n == 0 {
            return Err(Failure::new("demo: echo: the server closed early"));
        }
        show("client", format!("recv() = {n} bytes {}", quote(&back[got_back..got_back + n])));
        got_back += n;
    }
    if back[..got_back] != *message {
        return Err(Failure::new("demo: echo: the bytes that came back differ from those sent"));
    }

    heading(3, "UDP: datagrams, boundaries kept");
    explain(
        "UDP has no connection and no handshake: each sendto() sends one datagram to an \
         address, and each recvfrom() returns exactly one datagram, whole, together with the \
         address it came from — which is where a server sends its answer.",
    );
    let server_udp = Socket::new(&world.server, Domain::Inet, Type::Dgram).map_err(step("socket"))?;
    server_udp.set_read_timeout(Some(TIMEOUT)).map_err(step("SO_RCVTIMEO"))?;
    server_udp.bind(echo).map_err(step("bind"))?;
    show("server", format!("socket(AF_INET, SOCK_DGRAM) = #{}; bind({echo})", server_udp.id()));
    let client_udp = client.udp().map_err(step("socket"))?;
    let datagrams: [&[u8]; 3] = [b"one", b"two", b"three"];
    for d in datagrams {
        client_udp.send_to(d, echo).map_err(step("sendto"))?;
    }
    let names: Vec<String> = datagrams.iter().map(|d| quote(d)).collect();
    show("client", format!("sendto({echo}) three times: {}", names.join(", ")));
    for _ in datagrams {
        let (n, from) = server_udp.recv_from(&mut buf).map_err(step("recvfrom"))?;
        show("server", format!("recvfrom() = {n} bytes {} from {from}; sendto({from}) it back", quote(&buf[..n])));
        server_udp.send_to(&buf[..n], from).map_err(step("sendto"))?;
    }
    for _ in datagrams {
        let (n, from) = client_udp.recv_from(&mut buf).map_err(step("recvfrom"))?;
        show("client", format!("recvfrom() = {n} bytes {} from {from}", quote(&buf[..n])));
    }
    explain(
        "Three sendto()s, three recvfrom()s, three answers: the datagram boundaries were kept. \
         (Over TCP, \"one\", \"two\" and \"three\" could have arrived as \"onetwothree\".) The \
         client's socket was never bound: its first sendto() picked a port, as connect() does.",
    );

    heading(4, "A refused connection: RST and ECONNREFUSED");
    explain(&format!(
        "Nothing listens on port {CLOSED_PORT}. A stack that gets a SYN for a closed port \
         answers with a RST (reset), and the client's connect() fails at once with \
         ECONNREFUSED — no waiting for a timeout."
    ));
    let closed = SocketAddr::new(IpAddr::V4(SERVER_IP), CLOSED_PORT);
    show("client", format!("connect({closed}) ..."));
    let (refused, took) = client.connect(closed);
    match refused {
        Ok(_) => return Err(Failure::new(format!("demo: connect({closed}) succeeded, but nothing listens there"))),
        Err(e) => show("client", format!("connect() failed after {}: {}", ms(took), errno_text(&e))),
    }
    if client.kind() == ClientKind::Kernel {
        let kernel_closed = SocketAddr::new(IpAddr::V4(CLIENT_IP), CLOSED_PORT);
        explain(&format!("The kernel answers the same way: now ustack connects to port {CLOSED_PORT} of the kernel."));
        let socket = Socket::new(&world.server, Domain::Inet, Type::Stream).map_err(step("socket"))?;
        show("server", format!("connect({kernel_closed}) ..."));
        let started = Instant::now();
        match socket.connect_timeout(kernel_closed, TIMEOUT) {
            Ok(()) => return Err(Failure::new(format!("demo: connect({kernel_closed}) succeeded unexpectedly"))),
            Err(e) => show("server", format!("connect() failed after {}: {e}", ms(started.elapsed()))),
        }
    }

    heading(5, "Closing: FIN, and end of stream as recv() == 0");
    explain(
        "Each direction of a TCP connection closes on its own. shutdown(SHUT_WR) sends a FIN: \
         \"I will send nothing more\". The other side reads everything sent before it, and then \
         recv() returns 0 — end of stream, not an error. It can still send, until it closes too.",
    );
    conn.shutdown_write().map_err(step("shutdown"))?;
    show("client", "shutdown(SHUT_WR): FIN sent");
    let n = accepted.recv(&mut buf).map_err(step("recv"))?;
    if n != 0 {
        return Err(Failure::new(format!("demo: close: expected end of stream, got {n} bytes")));
    }
    show("server", format!("recv() = 0: end of stream, the client's FIN. State: {}", ustack_state(&accepted)));
    let state = settle(|| conn.state(), "FIN-WAIT-2");
    show("client", format!("State: {state} (its FIN was acknowledged; it waits for the server's)"));
    explain("The server has nothing more to send, so it closes its direction too:");
    accepted.shutdown(Shutdown::Write).map_err(step("shutdown"))?;
    let state = ustack_state(&accepted);
    show("server", format!("shutdown(SHUT_WR): FIN sent. State: {state}"));
    if state != "CLOSED" {
        let state = settle(|| ustack_state(&accepted), "CLOSED");
        show("server", format!("State: {state} (its FIN was acknowledged: the connection is gone)"));
    }
    let n = conn.recv(&mut buf).map_err(step("recv"))?;
    if n != 0 {
        return Err(Failure::new(format!("demo: close: expected end of stream, got {n} bytes")));
    }
    show("client", "recv() = 0: end of stream, the server's FIN");
    let state = settle(|| conn.state(), "TIME-WAIT");
    show("client", format!("State: {state}"));
    explain(
        "The side that closed first waits in TIME-WAIT (2 x MSL) before forgetting the \
         connection, so that late segments of it die out before the same addresses and ports \
         can name a new one. close() then releases the sockets.",
    );
    drop(accepted);
    drop(conn);
    Ok(())
}

/// Who plays the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Kernel,
    Ustack,
}

/// The client side of the tour: the same calls on the kernel (std::net in the namespace)
/// or on a second ustack stack.
trait Client {
    fn kind(&self) -> ClientKind;
    /// connect(), with how long it took (until success or failure).
    fn connect(&self, to: SocketAddr) -> (io::Result<Box<dyn Conn>>, Duration);
    /// An unbound UDP socket.
    fn udp(&self) -> io::Result<Box<dyn Datagrams>>;
}

/// A connected TCP socket of the client.
trait Conn {
    fn send(&mut self, data: &[u8]) -> io::Result<()>;
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn shutdown_write(&self) -> io::Result<()>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The TCP state, RFC 9293 style (`ESTABLISHED`, `TIME-WAIT`), or `?` if unknown.
    fn state(&self) -> String;
}

/// A UDP socket of the client.
trait Datagrams {
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()>;
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// The Linux kernel, inside the demo's namespace.
struct KernelClient {
    ns: NetNs,
}

impl Client for KernelClient {
    fn kind(&self) -> ClientKind {
        ClientKind::Kernel
    }

    fn connect(&self, to: SocketAddr) -> (io::Result<Box<dyn Conn>>, Duration) {
        // A socket belongs to the namespace of the thread that creates it.
        let ran = self.ns.run(move || {
            let started = Instant::now();
            let result = std::net::TcpStream::connect_timeout(&to, TIMEOUT);
            (result, started.elapsed())
        });
        let (result, took) = match ran {
            Ok(done) => done,
            Err(e) => return (Err(e), Duration::ZERO),
        };
        let conn = result.and_then(|stream| {
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            // Kept: once the kernel moves the connection to TIME-WAIT, the socket itself
            // is CLOSED and getpeername() fails, but /proc still lists the connection.
            let (local, peer) = (stream.local_addr()?, stream.peer_addr()?);
            Ok(Box::new(KernelConn { stream, local, peer, ns: self.ns.clone() }) as Box<dyn Conn>)
        });
        (conn, took)
    }

    fn udp(&self) -> io::Result<Box<dyn Datagrams>> {
        let socket = self.ns.run(|| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
        socket.set_read_timeout(Some(TIMEOUT))?;
        Ok(Box::new(KernelUdp(socket)))
    }
}

struct KernelConn {
    stream: std::net::TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    ns: NetNs,
}

impl Conn for KernelConn {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut self.stream, buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn state(&self) -> String {
        kernel_tcp_state(&self.ns, self.local, self.peer).unwrap_or("?").into()
    }
}

struct KernelUdp(std::net::UdpSocket);

impl Datagrams for KernelUdp {
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        self.0.send_to(data, to).map(drop)
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf)
    }
}

/// The kernel's state of the IPv4 connection `local` <-> `peer`, read from
/// `/proc/thread-self/net/tcp` inside the namespace, in RFC 9293 spelling.
fn kernel_tcp_state(ns: &NetNs, local: SocketAddr, peer: SocketAddr) -> Option<&'static str> {
    let table = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/tcp")).ok()?.ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (l, r, st) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
        if proc_addr(l)? != local || proc_addr(r)? != peer {
            return None;
        }
        // include/net/tcp_states.h
        Some(match u8::from_str_radix(st, 16).ok()? {
            1 => "ESTABLISHED",
            2 => "SYN-SENT",
            3 => "SYN-RECEIVED",
            4 => "FIN-WAIT-1",
            5 => "FIN-WAIT-2",
            6 => "TIME-WAIT",
            7 => "CLOSED",
            8 => "CLOSE-WAIT",
            9 => "LAST-ACK",
            10 => "LISTEN",
            11 => "CLOSING",
            _ => return None,
        })
    })
}

/// `0100070A:1F90` (the address as the kernel's u32 in host byte order, the port) → 10.7.0.1:8080.
fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip.to_ne_bytes())), port))
}

/// A second ustack stack.
struct UstackClient {
    stack: Stack,
}

impl Client for UstackClient {
    fn kind(&self) -> ClientKind {
        ClientKind::Ustack
    }

    fn connect(&self, to: SocketAddr) -> (io::Result<Box<dyn Conn>>, Duration) {
        let started = Instant::now();
        let result = (|| {
            let socket = Socket::new(&self.stack, Domain::Inet, Type::Stream)?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            socket.set_write_timeout(Some(TIMEOUT))?;
            socket.connect_timeout(to, TIMEOUT)?;
            Ok::<_, Errno>(socket)
        })();
        let took = started.elapsed();
        (result.map(|socket| Box::new(UstackConn(socket)) as Box<dyn Conn>).map_err(io::Error::from), took)
    }

    fn udp(&self) -> io::Result<Box<dyn Datagrams>> {
        let socket = Socket::new(&self.stack, Domain::Inet, Type::Dgram)?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        Ok(Box::new(UstackUdp(socket)))
    }
}

struct UstackConn(Socket);

impl Conn for UstackConn {
    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        while sent < data.len() {
            sent += self.0.send(&data[sent..])?;
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.0.recv(buf)?)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        Ok(self.0.shutdown(Shutdown::Write)?)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.local_addr()?)
    }

    fn state(&self) -> String {
        ustack_state(&self.0)
    }
}

struct UstackUdp(Socket);

impl Datagrams for UstackUdp {
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        self.0.send_to(data, to)?;
        Ok(())
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Ok(self.0.recv_from(buf)?)
    }
}

fn ustack_state(socket: &Socket) -> String {
    socket.tcp_state().map_or_else(|| "CLOSED".into(), |s| s.to_string())
}

/// Waits (briefly) for a state the connection is about to reach; returns the last seen.
fn settle(state: impl Fn() -> String, want: &str) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = state();
        if now == want || Instant::now() >= deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The errno name and text of a failed call: `ECONNREFUSED (Connection refused)`.
fn errno_text(e: &io::Error) -> String {
    Errno::from_io(e).map_or_else(|| e.to_string(), |errno| errno.to_string())
}

/// `.map_err(step("recv"))`: a failed call of the tour.
fn step<E: Into<io::Error>>(call: &'static str) -> impl FnOnce(E) -> Failure {
    move |e| Failure::new(format!("demo: {call}() failed: {}", errno_text(&e.into())))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes as a quoted string, with escapes: `"hello, ustack!\n"`.
fn quote(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn heading(n: u32, title: &str) {
    say!();
    say!("{n}. {title}");
}

fn show(who: &str, what: impl Display) {
    say!("   {who:>6}: {what}");
}

/// Prints `text` as an indented paragraph wrapped to [`WIDTH`].
fn explain(text: &str) {
    let indent = "   ";
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.chars().count() + 1 + word.chars().count() > WIDTH {
            say!("{line}");
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if line.len() > indent.len() {
        say!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses() {
        let expected: SocketAddr = "10.7.0.1:8080".parse().unwrap();
        let field = format!("{:08X}:1F90", u32::from_ne_bytes([10, 7, 0, 1]));
        assert_eq!(proc_addr(&field), Some(expected));
        assert_eq!(proc_addr("nonsense"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(b"hi\n"), "\"hi\\n\"");
    }
}
