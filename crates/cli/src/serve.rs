//! `ustack serve`: echo, discard or HTTP on TCP and UDP ports of the userspace stack,
//! reached by the kernel through a TUN, until SIGINT or SIGTERM — with the stack's
//! insides on show: the demux table (`--show-demux`, SIGUSR1), the listen backlog
//! (`--accept-delay`, `--on-overflow`), every packet (`--trace`, `--pcap`).
//!
//! Logs go to standard error; the demux table goes to standard output, so that it can be
//! kept apart from them (`ustack serve --show-demux > table.txt`).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clap::{Args, ValueEnum};
use log::{info, warn};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use ustack::device::trace::wall_clock;
use ustack::engine::DemuxRow;
use ustack::{Domain, Errno, Socket, Stack, StackConfig, Type};
use ustack_testkit::servers::{self, Ending, Watch};

use super::app::App;
use super::args::{NetArgs, Switch, TapArgs};
use super::http;
use super::live::Live;
use super::{Failure, context, warn_if_initial_netns};

/// The echo port (RFC 862), served when no port is given (echo, discard).
const ECHO_PORT: u16 = 7;

/// The HTTP port, served when no port is given (http).
const HTTP_PORT: u16 = 80;

/// The backlog of --ui-port's listener: --backlog's default.
const DEFAULT_BACKLOG: u32 = 128;

/// How often the main thread looks whether the stack has failed, between signals.
const HEALTH_CHECK: Duration = Duration::from_millis(500);

/// --show-demux prints at most once per this long: the first change of a burst at once,
/// then the state the burst left after at most this long. A handshake changes the table
/// three times within a millisecond; printing each would bury what matters.
const COALESCE: Duration = Duration::from_millis(100);

/// --show-demux also looks at the table this often when nothing signalled a change.
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Logs go to standard error: connection events, not every data packet. Handshakes
/// (ustack::handshake), backlog events (ustack::backlog) and the demux's decisions on new
/// connections (ustack::demux logs those at info, per-packet decisions at debug and
/// trace) are on; the packet trace is --trace's. RUST_LOG replaces all of it.
pub const DEFAULT_LOG: &str = "warn,ustack=info,ustack::trace=off";

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples (as root; the namespace keeps the TUN off your real network):
  ip netns add ustack
  ip netns exec ustack ustack serve --tcp 7 --udp 7 &
  ip netns exec ustack sh -c 'echo hello | nc -N 10.7.0.2 7'
  ip netns exec ustack sh -c 'echo hello | nc -u -w1 fd00:7::2 7'
  kill -USR1 %1      # print the demux table
  kill %1

  ip netns exec ustack ustack serve --app http --tcp 8080 --show-demux &
  ip netns exec ustack curl -s http://10.7.0.2:8080/     # your 5-tuple, handshake, RTT
  ip netns exec ustack curl -s http://10.7.0.2:8080/api/listeners  # queues and their history
  kill %1

  # The live view in a browser (run it inside the namespace too): queues filling and
  # draining, the demux table, handshake ladders, counters, updated twice a second.
  ip netns exec ustack ustack serve --app http --tcp 80 --backlog 1 --accept-delay 500 --ui-port 8080 &
  ip netns exec ustack chromium --no-sandbox http://10.7.0.2:8080/ui &
  kill %2 %1

  # Watch the backlog: SYNs beyond the SYN queue get SYN cookies; a full accept
  # queue drops SYNs, and the clients retransmit them.
  ip netns exec ustack ustack serve --tcp 7 --backlog 1 --accept-delay 2000 --trace &
  for i in 1 2 3 4 5; do ip netns exec ustack sh -c 'echo hi | nc -N 10.7.0.2 7' & done
  kill %1; ip netns del ustack

Each port is served on the wildcard address by one dual-stack socket, so IPv4 and IPv6
clients both reach it. Logs go to standard error: handshakes, backlog events and the
demux's decisions on new connections (RUST_LOG overrides; --trace adds every packet).
The demux table (--show-demux, SIGUSR1) goes to standard output. Runs until SIGINT or
SIGTERM, then exits 0; exits 1 if the TUN or the stack fails.")]
pub struct ServeArgs {
    #[command(flatten)]
    pub net: NetArgs,

    #[command(flatten)]
    pub taps: TapArgs,

    /// TCP port to serve (repeatable). Without --tcp and --udp: TCP and UDP port 7, or
    /// with --app http TCP port 80.
    #[arg(long = "tcp", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub tcp: Vec<u16>,

    /// UDP port to serve (repeatable).
    #[arg(long = "udp", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub udp: Vec<u16>,

    /// What to do with what arrives.
    #[arg(long, value_enum, default_value_t = App::Echo)]
    pub app: App,

    /// listen() backlog, at most 4096 (SOMAXCONN): up to N+1 established connections wait
    /// for accept(); a SYN that finds them full is dropped (the client retransmits), as in
    /// Linux. Up to N (at least 1) half-open ones wait for their handshake's last ACK;
    /// beyond that, SYNs are answered with SYN cookies (or dropped: --syn-cookies off).
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(0..=i64::from(ustack::engine::SOMAXCONN)))]
    pub backlog: u32,

    /// What a listener does with the handshake's last ACK when its accept queue is full:
    /// drop it, so the client resends it and gets in once there is room (Linux's default),
    /// or answer RST and forget the connection (Linux's net.ipv4.tcp_abort_on_overflow=1).
    /// A SYN that finds the accept queue full is dropped either way, as in Linux.
    #[arg(long, value_enum, value_name = "ACTION", default_value_t = Overflow::Drop)]
    pub on_overflow: Overflow,

    /// SYN cookies for SYNs beyond a full SYN queue (on, as Linux by default, or off, as
    /// with net.ipv4.tcp_syncookies=0).
    #[arg(long, value_enum, value_name = "on|off", default_value_t = Switch::On)]
    pub syn_cookies: Switch,

    /// Sleep this many milliseconds before each accept(), so that the accept queue fills
    /// and drains at a pace you can watch (each accept is logged with the queues after it).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub accept_delay: Option<u64>,

    /// Print the demux table (listeners with their queues, connections with their states,
    /// UDP sockets) to standard output at start and whenever it changes, at most every 100 ms.
    #[arg(long)]
    pub show_demux: bool,

    /// Also serve the live view on TCP PORT, whatever --app is: /ui (a page that updates
    /// itself: the demux table, each listener's SYN and accept queues over time, the
    /// recent handshakes as ladders, the counters) and its JSON endpoints /api/demux,
    /// /api/listeners, /api/handshakes, /api/counters. This port has no --accept-delay
    /// and the default backlog, so the page keeps up while the other ports are slow.
    /// (--app http serves /ui and /api/* on its own ports too.)
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ui_port: Option<u16>,

    /// Stack shards: an engine, a thread and a TUN queue each (IFF_MULTI_QUEUE); each TCP
    /// listener listens on every shard and new connections spread over them by flow hash.
    /// Default: the number of CPUs, or 1 with --pcap, --trace or fault injection (one
    /// ordered record of the packets) or --accept-delay (one accept queue to watch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub shards: Option<u16>,

    /// Send buffer and receive window a TCP connection starts with, in bytes (default
    /// 65536). The window grows as the application keeps up, up to --tcp-receive-max, and
    /// the send buffer with the congestion window, up to --tcp-send-max; memory is used only
    /// where data passed.
    #[arg(long = "tcp-buffer", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub tcp_buffer: Option<u64>,

    /// The most a TCP connection's receive window grows to, in bytes (default 6 MiB, as
    /// Linux's tcp_rmem[2]); at or below --tcp-buffer, the window stays at --tcp-buffer.
    #[arg(long = "tcp-receive-max", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub tcp_receive_max: Option<u64>,

    /// The most a TCP connection's send buffer grows to, in bytes (default 4 MiB, as
    /// Linux's tcp_wmem[2]); at or below --tcp-buffer, it stays at --tcp-buffer.
    #[arg(long = "tcp-send-max", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub tcp_send_max: Option<u64>,
}

/// `--on-overflow`: what a full accept queue does to the handshake's last ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Overflow {
    /// Drop the ACK: the connection stays half-open, the SYN-ACK is resent, and the
    /// client's ACK gets in once there is room.
    Drop,
    /// Answer RST: the connection is gone, and the client (whose connect() already
    /// succeeded) reads ECONNRESET.
    Rst,
}

impl ServeArgs {
    pub fn validate(&self) -> Result<(), String> {
        self.net.validate()?;
        if !self.app.serves_udp() && !self.udp.is_empty() {
            return Err(format!("--app {} serves TCP only: drop --udp", self.app));
        }
        if let Some(port) = self.ui_port
            && self.ports().0.contains(&port)
        {
            return Err(format!("--ui-port {port} is also a --tcp port: give the live view a port of its own"));
        }
        if let (Some(n @ 2..), Some(tap)) = (self.shards, self.taps.single_shard_only()) {
            return Err(format!("--shards {n} does not go with {tap}, which needs one shard: drop one of them"));
        }
        for (proto, ports) in [("--tcp", &self.tcp), ("--udp", &self.udp)] {
            if let Some(port) = ports.iter().enumerate().find_map(|(i, p)| ports[..i].contains(p).then_some(p)) {
                return Err(format!("{proto} {port} is given twice"));
            }
        }
        Ok(())
    }

    /// How many shards, with the default applied.
    fn shards(&self) -> usize {
        match self.shards {
            Some(n) => usize::from(n),
            // One queue to watch: --accept-delay is for seeing one listener's queues fill.
            None if self.taps.single_shard_only().is_some() || self.taps.trace || self.accept_delay.is_some() => 1,
            None => thread::available_parallelism().map_or(1, |n| n.get()).min(64),
        }
    }

    /// The TCP and UDP ports to serve, with the default applied.
    fn ports(&self) -> (Vec<u16>, Vec<u16>) {
        if self.tcp.is_empty() && self.udp.is_empty() {
            match self.app {
                App::Http => (vec![HTTP_PORT], vec![]),
                App::Echo | App::Discard => (vec![ECHO_PORT], vec![ECHO_PORT]),
            }
        } else {
            (self.tcp.clone(), self.udp.clone())
        }
    }
}

/// How long SIGINT/SIGTERM waits for the peers to acknowledge the FINs.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub fn run(args: ServeArgs) -> Result<(), Failure> {
    warn_if_initial_netns("serve");
    // Before any thread exists, so that every thread inherits the blocked mask and the
    // signals reach only the signalfd.
    let signals = Signals::block()?;
    let mut config = StackConfig {
        reset_on_overflow: args.on_overflow == Overflow::Rst,
        syn_cookies: args.syn_cookies == Switch::On,
        ..StackConfig::default()
    };
    if let Some(bytes) = args.tcp_receive_max {
        config.tcp_receive_max = bytes as usize;
    }
    if let Some(bytes) = args.tcp_send_max {
        config.tcp_send_max = bytes as usize;
    }
    if let Some(bytes) = args.tcp_buffer {
        config.tcp_buffer = bytes as usize;
    }
    let mut shards = args.shards();
    let stack = match args.net.open_sharded_stack(config.clone(), &args.taps, shards) {
        Ok((stack, _mtu)) => stack,
        // The default asked for more than one, and the TUN cannot have several queues (a
        // persistent one made without multi_queue, e.g. by root for this user): one shard,
        // as before shards existed. An explicit --shards N gets the error instead.
        Err(e) if shards > 1 && args.shards.is_none() => {
            info!(target: "ustack", "{e}: falling back to one shard");
            shards = 1;
            args.net.open_stack(config, &args.taps)?.0
        }
        Err(e) => return Err(e),
    };
    // Shared with the threads that need the stack itself (HTTP pages show its demux
    // table; --show-demux watches it). They are never joined: the process ends with run().
    let stack = Arc::new(stack);
    let (tcp_ports, udp_ports) = args.ports();
    let accept_delay = args.accept_delay.map(Duration::from_millis);
    // One live view for every HTTP port, started with the first.
    let mut live: Option<Arc<Live>> = None;
    let mut handler = |app: App| -> Result<Handler, Failure> {
        if let Some(stream) = app.echo_or_discard() {
            return Ok(Handler::Stream(stream));
        }
        let view = match &live {
            Some(view) => view.clone(),
            None => Live::start(stack.clone(), args.ui_port).map_err(context("starting the live view's sampler"))?,
        };
        live = Some(view.clone());
        Ok(Handler::Http(view))
    };

    let ui = args.ui_port.map(|port| (port, App::Http, DEFAULT_BACKLOG, None));
    for (port, app, backlog, delay) in
        tcp_ports.iter().map(|&port| (port, args.app, args.backlog, accept_delay)).chain(ui)
    {
        let listener = listen(&stack, port, backlog)?;
        let acceptor = Acceptor { port, listener, handler: handler(app)?, stack: stack.clone(), delay };
        thread::Builder::new()
            .name(format!("tcp-{port}"))
            .spawn(move || acceptor.run())
            .map_err(context("starting a thread"))?;
    }
    for &port in &udp_ports {
        let mut socket = bind_udp(&stack, port)?;
        // validate() lets only echo and discard serve UDP.
        let Some(app) = args.app.echo_or_discard() else { continue };
        thread::Builder::new()
            .name(format!("udp-{port}"))
            .spawn(move || match servers::serve_datagrams(app, &mut socket, &mut UdpWatch { port }) {
                // The stack shut down (SIGINT/SIGTERM closes every socket): a normal end.
                Ending::Failed(_, Errno::ENETDOWN | Errno::EBADF) => {}
                Ending::Failed(_, e) => warn!(target: "ustack", "udp {port}: stopped: {e}"),
                Ending::Closed | Ending::Stopped => {}
            })
            .map_err(context("starting a thread"))?;
    }
    if args.show_demux {
        let watched = stack.clone();
        thread::Builder::new()
            .name("show-demux".into())
            .spawn(move || show_demux(&watched))
            .map_err(context("starting a thread"))?;
    }

    info!(
        target: "ustack",
        "serving {} on {} at {} (TUN {}, kernel side {})",
        args.app,
        describe_ports(&tcp_ports, &udp_ports),
        args.net.stack_ips(),
        args.net.tun,
        args.net.peer_ips()
    );
    if shards > 1 {
        info!(target: "ustack", "{shards} shards: a thread and a TUN queue each; listeners listen on every shard");
    }
    if let Some(delay) = accept_delay {
        info!(target: "ustack", "waiting {} ms before each accept()", delay.as_millis());
    }
    if let Some(port) = args.ui_port {
        info!(target: "ustack", "live view at http://{}:{port}/ui", args.net.stack_ips());
    }
    if args.on_overflow == Overflow::Rst {
        info!(target: "ustack", "a handshake's last ACK that finds the accept queue full is answered with RST");
    }
    if args.syn_cookies == Switch::Off {
        info!(target: "ustack", "SYN cookies off: a SYN that finds the SYN queue full is dropped");
    }

    loop {
        match signals.wait(HEALTH_CHECK)? {
            Some(Signal::SIGUSR1) => print_table(&stack, "SIGUSR1"),
            Some(signal) => {
                // As a process exit would: every connection gets its FIN (queued ones a
                // RST), and the peers get the data still in flight before the TUN goes.
                info!(target: "ustack", "{signal}: closing every connection");
                let unacknowledged = stack.shutdown(SHUTDOWN_GRACE);
                if unacknowledged > 0 {
                    warn!(target: "ustack", "{unacknowledged} connection(s) did not acknowledge their FIN within {SHUTDOWN_GRACE:?}");
                }
                return Ok(());
            }
            None => {
                if let Some(why) = stack.error() {
                    return Err(Failure::new(format!("the stack stopped: {why}")));
                }
            }
        }
    }
}

/// Prints the demux table to standard output, under a line saying when and why.
fn print_table(stack: &Stack, why: &str) {
    print_block(&format!("demux table at {} ({why}):\n{}\n{}\n", time_of_day(), stack.demux_table(), forwarded(stack)));
}

/// "frames forwarded between shards: 3 to shard 0, 5 to shard 1\n" on a stack of several
/// shards (see `ustack::device::steer`), else nothing.
fn forwarded(stack: &Stack) -> String {
    let counts = stack.forwarded();
    if counts.is_empty() {
        return String::new();
    }
    let each: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(shard, (sent, dropped))| {
            let dropped = if *dropped > 0 { format!(" ({dropped} dropped)") } else { String::new() };
            format!("{sent} to shard {shard}{dropped}")
        })
        .collect();
    format!("frames forwarded between shards: {}\n", each.join(", "))
}

/// Writes `block` to standard output in one write, so that neither another printing
/// thread nor a reader of a pipe sees half of it. A closed standard output is ignored.
fn print_block(block: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(block.as_bytes()).and_then(|()| out.flush());
}

/// `--show-demux`: prints the table at start and after every change, coalesced (see
/// [`COALESCE`]); a table whose rows did not change (only its packet counters) is not
/// printed again. Ends when the stack stops.
fn show_demux(stack: &Stack) {
    let mut seen = stack.generation();
    let mut printed: Option<Vec<DemuxRow>> = None;
    loop {
        let table = stack.demux_table();
        if printed.as_ref() != Some(&table.rows) {
            let why = if printed.is_none() { "start" } else { "changed" };
            print_block(&format!("demux table at {} ({why}):\n{table}\n\n", time_of_day()));
            printed = Some(table.rows);
            thread::sleep(COALESCE);
        }
        let now = stack.wait_for_change(seen, IDLE_LOOK);
        if stack.error().is_some() {
            return;
        }
        seen = now;
    }
}

/// The wall clock's time of day in UTC, `12:34:56.789`, as the trace lines show it.
fn time_of_day() -> String {
    let now = wall_clock();
    let secs = now.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, now.subsec_millis())
}

/// "tcp 7, 80, udp 7"
fn describe_ports(tcp: &[u16], udp: &[u16]) -> String {
    let list = |proto: &str, ports: &[u16]| {
        (!ports.is_empty())
            .then(|| format!("{proto} {}", ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")))
    };
    [list("tcp", tcp), list("udp", udp)].into_iter().flatten().collect::<Vec<_>>().join(", ")
}

/// A dual-stack (AF_INET6, `[::]:port`) socket takes IPv4 and IPv6 alike.
fn wildcard(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
}

/// An IPv4 peer of a dual-stack socket shows as `::ffff:10.7.0.1`; log it as `10.7.0.1`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn listen(stack: &Stack, port: u16, backlog: u32) -> Result<Socket, Failure> {
    let what = format!("listening on tcp port {port}");
    let socket = Socket::new(stack, Domain::Inet6, Type::Stream).map_err(context(&what))?;
    socket.set_reuse_address(true).map_err(context(&what))?;
    socket.bind(wildcard(port)).map_err(context(&what))?;
    socket.listen(backlog).map_err(context(&what))?;
    Ok(socket)
}

fn bind_udp(stack: &Stack, port: u16) -> Result<Socket, Failure> {
    let what = format!("binding udp port {port}");
    let socket = Socket::new(stack, Domain::Inet6, Type::Dgram).map_err(context(&what))?;
    socket.bind(wildcard(port)).map_err(context(&what))?;
    Ok(socket)
}

/// One TCP port's listener and what to do with its connections.
struct Acceptor {
    port: u16,
    listener: Socket,
    handler: Handler,
    stack: Arc<Stack>,
    /// --accept-delay.
    delay: Option<Duration>,
}

/// What a port does with a connection.
#[derive(Clone)]
enum Handler {
    /// Echo or discard.
    Stream(servers::App),
    /// HTTP, with the live view it serves.
    Http(Arc<Live>),
}

impl Acceptor {
    /// accept() forever, a thread per connection; ends when the stack stops.
    fn run(self) {
        let port = self.port;
        loop {
            if let Some(delay) = self.delay {
                thread::sleep(delay);
            }
            let (conn, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(Errno::EAGAIN) => continue,
                Err(Errno::ENETDOWN | Errno::EBADF) => return,
                Err(e) => {
                    warn!(target: "ustack", "tcp {port}: accept() failed, no longer serving: {e}");
                    return;
                }
            };
            let peer = canonical(peer);
            let (syn, accept, _) = self.listener.listen_queues().unwrap_or_default();
            info!(target: "ustack", "tcp {port}: accepted {peer}; accept queue now {accept}, SYN queue {syn}");
            let (handler, stack) = (self.handler.clone(), self.stack.clone());
            let spawned = thread::Builder::new()
                .name(format!("tcp-{port}-conn"))
                .spawn(move || serve_connection(port, peer, &handler, conn, &stack));
            if let Err(e) = spawned {
                // The connection (moved into the failed closure) is dropped, which closes it.
                warn!(target: "ustack", "tcp {port}: no thread for the connection from {peer}, closing it: {e}");
            }
        }
    }
}

/// Serves one accepted connection, and logs how it ended.
fn serve_connection(port: u16, peer: SocketAddr, handler: &Handler, mut conn: Socket, stack: &Stack) {
    match handler {
        Handler::Stream(app) => serve_stream(port, peer, *app, &mut conn),
        Handler::Http(live) => serve_http(port, peer, &conn, stack, live),
    }
}

/// One HTTP exchange, and how it went in the log.
fn serve_http(port: u16, peer: SocketAddr, conn: &Socket, stack: &Stack, live: &Live) {
    let outcome = http::serve(conn, stack, live);
    match (outcome.status, outcome.request) {
        (Some(status), Some(request)) => info!(target: "ustack", "tcp {port}: {peer}: \"{request}\" {status}"),
        (Some(status), None) => info!(target: "ustack", "tcp {port}: {peer}: no request, {status}"),
        (None, _) => match outcome.error {
            None => info!(target: "ustack", "tcp {port}: {peer} closed without a request"),
            Some(Errno::ENETDOWN) => {}
            Some(e) => info!(target: "ustack", "tcp {port}: {peer}: {e}"),
        },
    }
    if let (Some(_), Some(e)) = (outcome.status, outcome.error)
        && e != Errno::ENETDOWN
    {
        info!(target: "ustack", "tcp {port}: {peer}: {e} while sending the response");
    }
}

/// Echo or discard on one accepted connection, and how it ended in the log.
fn serve_stream(port: u16, peer: SocketAddr, app: servers::App, conn: &mut Socket) {
    // No timeouts are set, so none is waited through.
    let end = servers::serve_stream(app, conn, &mut ());
    let verb = if matches!(app, servers::App::Echo) { "echoed" } else { "discarded" };
    match end.ending {
        Ending::Closed | Ending::Stopped => {
            info!(target: "ustack", "tcp {port}: {peer} closed, {} bytes {verb}", end.bytes)
        }
        Ending::Failed(_, Errno::ENETDOWN | Errno::EBADF) => {}
        Ending::Failed(_, e) => info!(target: "ustack", "tcp {port}: {peer}: {e} after {} bytes {verb}", end.bytes),
    }
}

/// A UDP port's server: a reply that cannot be sent is logged and lost (UDP's normal);
/// the stack shutting down (ENETDOWN, or EBADF once shutdown closed the socket) ends it.
struct UdpWatch {
    port: u16,
}

impl Watch<Errno> for UdpWatch {
    fn waits_through_timeouts(&self) -> bool {
        true
    }

    fn reply_failed(&mut self, to: SocketAddr, error: &Errno) -> bool {
        if matches!(error, Errno::ENETDOWN | Errno::EBADF) {
            return false;
        }
        warn!(target: "ustack", "udp {}: reply to {} lost: {error}", self.port, canonical(to));
        true
    }
}

/// SIGINT, SIGTERM and SIGUSR1, blocked in every thread and read from a signalfd.
pub(crate) struct Signals(SignalFd);

impl Signals {
    /// Blocks them in this thread and every thread it starts from now on: call it before
    /// starting any.
    pub(crate) fn block() -> Result<Signals, Failure> {
        let mut set = SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGUSR1] {
            set.add(signal);
        }
        set.thread_block().map_err(context("blocking signals"))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(context("creating a signalfd"))?;
        Ok(Signals(fd))
    }

    /// The next signal, or `None` after `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) -> Result<Option<Signal>, Failure> {
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Failure::new(format!("waiting for signals: {e}"))),
        }
        match self.0.read_signal() {
            Ok(Some(info)) => Ok(Signal::try_from(info.ssi_signo as i32).ok()),
            Ok(None) | Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(Failure::new(format!("reading signals: {e}"))),
        }
    }
}
