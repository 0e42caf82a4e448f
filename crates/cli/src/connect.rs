//! `ustack connect`: a netcat-like client on the userspace stack. Standard input goes to
//! the peer, what comes back goes to standard output.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use smoltcp::socket::tcp;
use ustack::{Domain, Errno, Socket, Stack, StackConfig, Type};

use nix::sys::signal::Signal;

use super::args::{NetArgs, TapArgs, parse_secs, parse_target};
use super::serve::{SHUTDOWN_GRACE, Signals};
use super::{Failure, context, warn_if_initial_netns};

/// Bytes read from standard input at a time (TCP).
const CHUNK: usize = 64 * 1024;

/// How long a closing connection may take to finish its FIN exchange before we exit.
const LINGER: Duration = Duration::from_secs(1);

/// UDP: how long to wait for replies after end of input, unless --wait says otherwise.
const DEFAULT_WAIT_MS: u64 = 1000;

/// How often the UDP receiver looks whether its wait after end of input is over.
const UDP_TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Args)]
#[command(after_long_help = "\
TCP: after end of input, the write side is shut down (FIN) and replies are read until the
peer closes; a clean close exits 0. A failure prints one line, errno name first, e.g.
  ustack: connect 10.7.0.1:9: ECONNREFUSED (Connection refused)
and exits 1.

--trace prints each packet in and out on standard error, as tcpdump -nn would; --pcap FILE
records them for tcpdump -r or Wireshark. Standard output carries only the data.

UDP (--udp): each chunk read from standard input (one line, when typing) is one datagram,
and each reply is written out as it arrives. ICMP errors are not reported: no answer just
means no output.

The client runs on its own TUN. To reach a `ustack serve` in the same network namespace,
give it another TUN name and subnet; the kernel forwards between the two TUNs:
  ip netns add ustack
  ip netns exec ustack sysctl -qw net.ipv4.ip_forward=1
  ip netns exec ustack ustack serve &
  echo hello | ip netns exec ustack ustack connect --tun ustack1 \\
      --addr 10.8.0.2/24 --peer-addr 10.8.0.1/24 10.7.0.2:7
  kill %1; ip netns del ustack")]
pub struct ConnectArgs {
    #[command(flatten)]
    pub net: NetArgs,

    #[command(flatten)]
    pub taps: TapArgs,

    /// Send UDP datagrams instead of opening a TCP connection.
    #[arg(long)]
    pub udp: bool,

    /// How long connect() waits for the TCP handshake before giving up with ETIMEDOUT.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,

    /// UDP: after end of input, stop once no reply has come for this many milliseconds
    /// [default: 1000].
    #[arg(long, value_name = "MS")]
    pub wait: Option<u64>,

    /// Where to connect: a literal IPv4 or IPv6 address and a port.
    #[arg(value_name = "HOST:PORT", value_parser = parse_target)]
    pub target: SocketAddr,
}

impl ConnectArgs {
    pub fn validate(&self) -> Result<(), String> {
        self.net.validate()?;
        if self.wait.is_some() && !self.udp {
            return Err("--wait applies only to --udp (TCP reads until the peer closes)".into());
        }
        let v4 = self.target.is_ipv4();
        if !self.net.addrs.iter().any(|c| c.addr().is_ipv4() == v4) {
            let family = if v4 { "IPv4" } else { "IPv6" };
            return Err(format!("{} is {family}, but no --addr is: the stack has nothing to send from", self.target));
        }
        Ok(())
    }
}

pub fn run(args: ConnectArgs) -> Result<(), Failure> {
    warn_if_initial_netns("connect");
    // Before any thread exists (the stack's too), so that the signals reach only the
    // signalfd the watcher reads.
    let signals = Signals::block()?;
    let (stack, mtu) = args.net.open_stack(StackConfig::default(), &args.taps)?;
    let stack = Arc::new(stack);
    let watched = stack.clone();
    let watcher = thread::Builder::new()
        .name("signals".into())
        .spawn(move || close_on_signal(&signals, &watched))
        .map_err(context("starting a thread"))?;
    let result = if args.udp { udp(&args, &stack, mtu) } else { tcp(&args, &stack) };
    // Closing on a signal ends the socket calls above (EBADF): the watcher, not their
    // error, ends the process, once the connection is closed.
    if SIGNALLED.get().is_some() {
        let _ = watcher.join();
    }
    result
}

/// The signal that is closing the connection, once one came.
static SIGNALLED: OnceLock<Signal> = OnceLock::new();

/// On SIGINT or SIGTERM, closes the connection as `serve` closes its own (a FIN, data in
/// flight delivered first, at most [`SHUTDOWN_GRACE`] waited for the peer's ACK), instead
/// of vanishing with the TUN and leaving the peer ESTABLISHED; then exits with the status
/// a shell gives a process that signal ended (128 + its number).
fn close_on_signal(signals: &Signals, stack: &Stack) {
    loop {
        match signals.wait(SHUTDOWN_GRACE) {
            Ok(Some(signal @ (Signal::SIGINT | Signal::SIGTERM))) => {
                log::info!(target: "ustack", "{signal}: closing the connection");
                let _ = SIGNALLED.set(signal);
                stack.shutdown(SHUTDOWN_GRACE);
                std::process::exit(128 + signal as i32);
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!(target: "ustack", "{e}: SIGINT and SIGTERM now end the process without closing");
                return;
            }
        }
    }
}

fn domain(target: SocketAddr) -> Domain {
    if target.is_ipv4() { Domain::Inet } else { Domain::Inet6 }
}

/// What went wrong on the sending side, reported if the receiving side saw nothing wrong.
#[derive(Default)]
struct SendSide {
    error: Mutex<Option<String>>,
    /// Inside send(): its error (say ECONNRESET, which is reported once, to one call) is
    /// about to be recorded.
    busy: AtomicBool,
}

fn tcp(args: &ConnectArgs, stack: &Stack) -> Result<(), Failure> {
    let target = args.target;
    let socket = Socket::new(stack, domain(target), Type::Stream).map_err(context(format!("connect {target}")))?;
    socket.connect_timeout(target, args.timeout).map_err(context(format!("connect {target}")))?;

    let writer = socket.try_clone().map_err(context(format!("connect {target}")))?;
    let send_side = Arc::new(SendSide::default());
    let ss = send_side.clone();
    thread::Builder::new()
        .name("stdin".into())
        .spawn(move || copy_stdin(&writer, &ss))
        .map_err(context("starting a thread"))?;

    let mut buf = vec![0; CHUNK];
    let mut stdout = io::stdout().lock();
    loop {
        let n = match socket.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(Failure::new(format!("connect {target}: recv: {e}"))),
        };
        if let Err(e) = stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(()); // whoever read our output is gone (`| head`): done
            }
            return Err(Failure::new(format!("writing to standard output: {e}")));
        }
    }
    // Give a send() that just failed the moment to record why.
    let deadline = Instant::now() + Duration::from_millis(200);
    while send_side.busy.load(Ordering::Acquire) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    if let Some(error) = send_side.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(Failure::new(format!("connect {target}: {error}")));
    }
    linger(&socket);
    Ok(())
}

/// Standard input to the connection; at its end, shutdown(Write) sends our FIN.
fn copy_stdin(socket: &Socket, side: &SendSide) {
    let record = |e: String| *side.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                record(format!("reading standard input: {e}"));
                break;
            }
        };
        let mut sent = 0;
        while sent < n {
            side.busy.store(true, Ordering::Release);
            let result = socket.send(&buf[sent..n]);
            match result {
                Ok(k) => sent += k,
                Err(e) => {
                    record(format!("send: {e}"));
                    side.busy.store(false, Ordering::Release);
                    return;
                }
            }
            side.busy.store(false, Ordering::Release);
        }
    }
    let _ = socket.shutdown(Shutdown::Write);
}

/// Sends our FIN if not yet sent, and waits (briefly) for the close to finish, so the peer
/// gets its last ACK before the TUN disappears with this process.
fn linger(socket: &Socket) {
    let _ = socket.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    while Instant::now() < deadline {
        match socket.tcp_state() {
            None | Some(tcp::State::Closed | tcp::State::TimeWait) => return,
            Some(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn udp(args: &ConnectArgs, stack: &Stack, mtu: usize) -> Result<(), Failure> {
    let target = args.target;
    let ctx = || context(format!("connect {target}"));
    let socket = Socket::new(stack, domain(target), Type::Dgram).map_err(ctx())?;
    socket.connect(target).map_err(ctx())?;
    socket.set_read_timeout(Some(UDP_TICK)).map_err(ctx())?;
    let receiver = socket.try_clone().map_err(ctx())?;
    let input_done = Arc::new(OnceLock::new());
    let done = input_done.clone();
    let wait = Duration::from_millis(args.wait.unwrap_or(DEFAULT_WAIT_MS));
    let replies = thread::Builder::new()
        .name("replies".into())
        .spawn(move || print_replies(&receiver, &done, wait))
        .map_err(context("starting a thread"))?;

    // Each read is one datagram; reading at most what fits in one packet splits longer
    // input instead of going out in IP fragments.
    let headers = if target.is_ipv4() { 20 + 8 } else { 40 + 8 };
    let mut buf = vec![0; mtu.saturating_sub(headers).max(1)];
    let mut stdin = io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::new(format!("reading standard input: {e}"))),
        };
        socket.send(&buf[..n]).map_err(context(format!("connect {target}: send")))?;
    }
    let _ = input_done.set(Instant::now());
    match replies.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::new(format!("connect {target}: recv: {e}"))),
        Err(_) => Err(Failure::new("the reply thread panicked")),
    }
}

/// Writes each datagram that arrives to standard output, until `wait` has passed after
/// both the end of input and the last reply.
fn print_replies(socket: &Socket, input_done: &OnceLock<Instant>, wait: Duration) -> Result<(), Errno> {
    let mut buf = vec![0; 64 * 1024];
    let mut last_reply: Option<Instant> = None;
    let mut stdout = io::stdout().lock();
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                last_reply = Some(Instant::now());
                if stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()).is_err() {
                    return Ok(()); // standard output is gone; nothing more to show
                }
            }
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e),
        }
        if let Some(&done) = input_done.get() {
            let quiet_since = last_reply.map_or(done, |last| last.max(done));
            if quiet_since.elapsed() >= wait {
                return Ok(());
            }
        }
    }
}
