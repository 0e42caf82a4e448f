//! TCP through random loss: ustack against the kernel, both through ustack's own fault
//! injector, so that both lose the same share of packets the same way.
//!
//! ustack's run is the usual lab with the injector between the stack and its TUN. The
//! kernel's run joins two kernel stacks, each in a namespace of its own with a TUN, by a
//! relay in this process that copies packets from one TUN to the other through the same
//! injector (wrapped around one of the TUNs: its receive side loses one way, its transmit
//! side the other). A kernel client echoes `bytes` through the server and measures, from
//! connect to the echo's end of stream: the time, the longest stall (the longest wait for
//! the next bytes of the echo), and what was resent (the kernel's `tcpi_bytes_retrans`
//! of each kernel socket, ustack's own count of what its recovery resent).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ustack::device::{FaultConfig, FaultInjector, Faults, Link, TunDevice};
use ustack::sys::NetNs;
use ustack::{Cidr, StackConfig, TcpListener};
use ustack_testkit::lab::{Lab, LabNet};

use super::os;
use super::peer::{self, IO_TIMEOUT, Listener, STOP_CHECK};

/// The relay lab's addresses: the client's TUN and the server's TUN, one subnet.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
const PORT: u16 = 7;
/// How long one echo may take before the run counts as failed.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// One echo through loss.
#[derive(Debug, Clone, Copy)]
pub struct LossRun {
    pub elapsed: Duration,
    /// The longest wait for the echo's next bytes.
    pub longest_stall: Duration,
    /// Bytes resent by both ends.
    pub resent_bytes: u64,
}

fn faults(drop_pct: f64, seed: u64) -> FaultConfig {
    FaultConfig::both(Faults::lossy(drop_pct, 0.0)).with_seed(seed)
}

/// Echoes `bytes` through a ustack echo server behind an injector losing `drop_pct`%
/// each way.
pub fn ustack(drop_pct: f64, bytes: usize, seed: u64) -> io::Result<LossRun> {
    let net = LabNet {
        tun: "bloss0".into(),
        kernel: vec![Cidr::new(CLIENT, 24).expect("a /24")],
        stack: vec![Cidr::new(SERVER, 24).expect("a /24")],
        mtu: None,
        // Loss is per frame: without offloads a frame is a packet, as for the kernel
        // baseline, whose relay moves packets one by one too.
        offload: false,
    };
    let lab = Lab::start_in(NetNs::new()?, &net, StackConfig::default(), |tun| {
        FaultInjector::new(tun, faults(drop_pct, seed)).expect("an epoll and a timerfd")
    })?;
    let listener = TcpListener::bind_with_backlog(&lab.stack, any(), 16)?;
    listener.socket().set_read_timeout(Some(STOP_CHECK))?;
    let mut run = echo(&listener, &lab.ns, bytes)?;
    let server_resent: u64 = lab.stack.connections().iter().map(|c| c.resent_bytes).sum();
    run.resent_bytes += server_resent;
    Ok(run)
}

/// Echoes `bytes` through a kernel echo server, the kernel client's packets and its
/// relayed through the same injector as ustack's run.
pub fn kernel(drop_pct: f64, bytes: usize, seed: u64) -> io::Result<LossRun> {
    let relay = Relay::new(drop_pct, seed)?;
    let listener = relay.server.run(|| std::net::TcpListener::bind(any()))??;
    super::os::set_accept_timeout(&listener, STOP_CHECK)?;
    // CUBIC, as on every kernel socket of the bench (BBR does not slow down for random loss).
    super::os::set_congestion(&listener, peer::KERNEL_CONGESTION)?;
    let run = echo(&listener, &relay.client, bytes)?;
    relay.stop()?;
    Ok(run)
}

fn any() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)
}

/// A kernel client in `client_ns` echoes `bytes` through the server on `listener`.
fn echo(listener: &dyn Listener, client_ns: &NetNs, bytes: usize) -> io::Result<LossRun> {
    std::thread::scope(|scope| {
        let server = scope.spawn(|| -> io::Result<u64> {
            let mut stream = peer::accept_within(listener, IO_TIMEOUT)?;
            let mut buf = vec![0; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => stream.write_all(&buf[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            stream.shutdown_write()?;
            Ok(stream.resent_bytes())
        });
        let client = client_ns.run(|| client(SocketAddrV4::new(SERVER, PORT), bytes)).and_then(|r| r);
        let server_resent = peer::join_scoped(server);
        let mut run = client?;
        run.resent_bytes += server_resent?;
        Ok(run)
    })
}

/// The kernel client: sends `bytes` from one thread, reads the echo on this one.
fn client(addr: SocketAddrV4, bytes: usize) -> io::Result<LossRun> {
    let start = Instant::now();
    let stream = peer::connect(addr)?;
    stream.set_read_timeout(Some(RUN_LIMIT))?;
    stream.set_write_timeout(Some(RUN_LIMIT))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> io::Result<()> {
        let chunk = vec![0x5a; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n])?;
            left -= n;
        }
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut reader = &stream;
    let mut buf = vec![0; 64 * 1024];
    let (mut got, mut last, mut longest) = (0, Instant::now(), Duration::ZERO);
    loop {
        let n = reader.read(&mut buf)?;
        let now = Instant::now();
        longest = longest.max(now - last);
        last = now;
        if n == 0 {
            break;
        }
        got += n;
    }
    peer::join(sender)?;
    if got != bytes {
        return Err(io::Error::other(format!("echoed {got} bytes of {bytes}")));
    }
    Ok(LossRun {
        elapsed: start.elapsed(),
        longest_stall: longest,
        resent_bytes: os::TcpInfo::of(&stream).bytes_retrans,
    })
}

/// Two kernel stacks, each in a namespace with a TUN, and a thread copying packets
/// between the TUNs through a fault injector.
struct Relay {
    client: NetNs,
    server: NetNs,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<()>>,
}

impl Relay {
    fn new(drop_pct: f64, seed: u64) -> io::Result<Relay> {
        let net = |tun: &str, kernel: Ipv4Addr| LabNet {
            tun: tun.into(),
            kernel: vec![Cidr::new(kernel, 24).expect("a /24")],
            stack: Vec::new(),
            mtu: None,
            offload: false,
        };
        let client = NetNs::new()?;
        let server = NetNs::new()?;
        let client_tun = net("blossc", CLIENT).open_in(&client)?;
        let server_tun = net("blosss", SERVER).open_in(&server)?;
        let lossy = FaultInjector::new(client_tun, faults(drop_pct, seed))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread =
            std::thread::Builder::new().name("loss-relay".into()).spawn(move || relay(lossy, server_tun, &flag))?;
        Ok(Relay { client, server, stop, thread })
    }

    fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        peer::join(self.thread)
    }
}

/// Copies packets both ways between `a` and `b` until `stop`.
fn relay(mut a: FaultInjector<TunDevice>, mut b: TunDevice, stop: &AtomicBool) -> io::Result<()> {
    let epoch = Instant::now();
    let mut frame = Vec::with_capacity(65536);
    while !stop.load(Ordering::Relaxed) {
        {
            let mut fds = [PollFd::new(a.wait_fd(), PollFlags::POLLIN), PollFd::new(b.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(10u8)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let now = smoltcp::time::Instant::from_micros(epoch.elapsed().as_micros() as i64);
        while a.receive_into(now, &mut frame) {
            b.transmit_from(now, &frame);
        }
        while b.receive_into(now, &mut frame) {
            a.transmit_from(now, &frame);
        }
        if let Some(e) = a.take_error().or_else(|| b.take_error()) {
            return Err(e);
        }
    }
    Ok(())
}
