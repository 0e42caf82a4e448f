//! `ustack serve`: echo or discard on TCP and UDP ports of the userspace stack, reached by
//! the kernel through a TUN, until SIGINT or SIGTERM.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use clap::Args;
use log::{info, warn};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use ustack::{Domain, Errno, Socket, Stack, Type};

use super::app::{self, App};
use super::args::NetArgs;
use super::{Failure, context, warn_if_initial_netns};

/// The echo port (RFC 862), served when no port is given.
const ECHO_PORT: u16 = 7;

/// How often the main thread looks whether the stack has failed, between signals.
const HEALTH_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples (as root; the namespace keeps the TUN off your real network):
  ip netns add ustack
  ip netns exec ustack ustack serve --tcp 7 --udp 7 &
  ip netns exec ustack sh -c 'echo hello | nc -N 10.7.0.2 7'
  ip netns exec ustack sh -c 'echo hello | nc -u -w1 fd00:7::2 7'
  kill -USR1 %1      # log listener queues and connection counts
  kill %1; ip netns del ustack

Each port is served on the wildcard address by one dual-stack socket, so IPv4 and IPv6
clients both reach it. Runs until SIGINT or SIGTERM, then exits 0; exits 1 if the TUN or
the stack fails.")]
pub struct ServeArgs {
    #[command(flatten)]
    pub net: NetArgs,

    /// TCP port to serve (repeatable). Without --tcp and --udp, TCP and UDP port 7.
    #[arg(long = "tcp", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub tcp: Vec<u16>,

    /// UDP port to serve (repeatable).
    #[arg(long = "udp", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub udp: Vec<u16>,

    /// What to do with what arrives.
    #[arg(long, value_enum, default_value_t = App::Echo)]
    pub app: App,

    /// listen() backlog, at most 4096 (SOMAXCONN): up to N+1 established connections wait
    /// for accept(); further SYNs are dropped (the client retransmits), as in Linux.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(0..=i64::from(ustack::stack::SOMAXCONN)))]
    pub backlog: u32,

    /// Receive and send buffer per TCP connection, in bytes (each way; default 65536).
    #[arg(long = "tcp-buffer", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub tcp_buffer: Option<u64>,
}

impl ServeArgs {
    pub fn validate(&self) -> Result<(), String> {
        self.net.validate()?;
        for (proto, ports) in [("--tcp", &self.tcp), ("--udp", &self.udp)] {
            if let Some(port) = ports.iter().enumerate().find_map(|(i, p)| ports[..i].contains(p).then_some(p)) {
                return Err(format!("{proto} {port} is given twice"));
            }
        }
        Ok(())
    }

    /// The TCP and UDP ports to serve, with the default applied.
    fn ports(&self) -> (Vec<u16>, Vec<u16>) {
        if self.tcp.is_empty() && self.udp.is_empty() {
            (vec![ECHO_PORT], vec![ECHO_PORT])
        } else {
            (self.tcp.clone(), self.udp.clone())
        }
    }
}

/// Connection counts of one TCP port, for the SIGUSR1 report.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    open: AtomicU64,
}

pub fn run(args: ServeArgs) -> Result<(), Failure> {
    warn_if_initial_netns("serve");
    // Before any thread exists, so that every thread inherits the blocked mask and the
    // signals reach only the signalfd.
    let signals = Signals::block()?;
    let tcp_buffer = args.tcp_buffer.map(|b| b as usize);
    let (stack, _mtu) = args.net.open_stack(tcp_buffer)?;
    let (tcp_ports, udp_ports) = args.ports();

    let mut listeners = Vec::new();
    for &port in &tcp_ports {
        let listener = listen(&stack, port, args.backlog)?;
        let counts = Arc::new(Counts::default());
        let (socket, app, c) = (listener.try_clone().map_err(context("dup"))?, args.app, counts.clone());
        thread::Builder::new()
            .name(format!("tcp-{port}"))
            .spawn(move || accept_loop(port, &socket, app, &c))
            .map_err(context("starting a thread"))?;
        listeners.push((port, listener, counts));
    }
    for &port in &udp_ports {
        let socket = bind_udp(&stack, port)?;
        let app = args.app;
        thread::Builder::new()
            .name(format!("udp-{port}"))
            .spawn(move || {
                let stopped = app::serve_datagrams(app, &socket, |from, e| {
                    warn!(target: "ustack", "udp {port}: reply to {} lost: {e}", canonical(from));
                });
                if stopped != Errno::ENETDOWN {
                    warn!(target: "ustack", "udp {port}: stopped: {stopped}");
                }
            })
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

    loop {
        match signals.wait(HEALTH_CHECK)? {
            Some(Signal::SIGUSR1) => report(&listeners),
            Some(signal) => {
                info!(target: "ustack", "{signal}: shutting down");
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

/// accept() forever, a thread per connection; ends when the stack stops.
fn accept_loop(port: u16, listener: &Socket, app: App, counts: &Arc<Counts>) {
    loop {
        let (conn, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(Errno::EAGAIN) => continue,
            Err(Errno::ENETDOWN | Errno::EBADF) => return,
            Err(e) => {
                warn!(target: "ustack", "tcp {port}: accept() failed, no longer serving: {e}");
                return;
            }
        };
        let peer = canonical(peer);
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        counts.open.fetch_add(1, Ordering::Relaxed);
        let c = counts.clone();
        let spawned = thread::Builder::new().name(format!("tcp-{port}-conn")).spawn(move || {
            info!(target: "ustack", "tcp {port}: connection from {peer}");
            let end = app::serve_stream(app, &conn);
            let verb = if app == App::Echo { "echoed" } else { "discarded" };
            match end.error {
                None => info!(target: "ustack", "tcp {port}: {peer} closed, {} bytes {verb}", end.bytes),
                Some(Errno::ENETDOWN) => {}
                Some(e) => info!(target: "ustack", "tcp {port}: {peer}: {e} after {} bytes {verb}", end.bytes),
            }
            c.open.fetch_sub(1, Ordering::Relaxed);
        });
        if let Err(e) = spawned {
            // The connection (moved into the failed closure) is dropped, which closes it.
            warn!(target: "ustack", "tcp {port}: no thread for the connection from {peer}, closing it: {e}");
            counts.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// SIGUSR1: each listener's queues and connection counts.
fn report(listeners: &[(u16, Socket, Arc<Counts>)]) {
    for (port, listener, counts) in listeners {
        let (syn, accept, dropped) = listener.listen_queues().unwrap_or_default();
        info!(
            target: "ustack",
            "tcp {port}: SYN queue {syn}, accept queue {accept}, {dropped} SYNs/ACKs dropped; {} connections accepted, {} open",
            counts.accepted.load(Ordering::Relaxed),
            counts.open.load(Ordering::Relaxed)
        );
    }
}

/// SIGINT, SIGTERM and SIGUSR1, blocked in every thread and read from a signalfd.
struct Signals(SignalFd);

impl Signals {
    fn block() -> Result<Signals, Failure> {
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
    fn wait(&self, timeout: Duration) -> Result<Option<Signal>, Failure> {
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
