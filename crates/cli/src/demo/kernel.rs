//! The demo as root: the Linux kernel is the client, over a TUN inside a network namespace
//! made for the demo; ustack, in this process, is the server on its stack thread, driven
//! through the blocking socket API ([`Socket`]). Times are real.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use ustack::Cidr;
use ustack::device::TunDevice;
use ustack::engine::SockId;
use ustack::packet::{TcpdumpFormatter, TimeFormat};
use ustack::sys::NetNs;
use ustack::{Domain, Socket, Stack, StackConfig, Type};
use ustack_testkit::lab::{LabNet, TUN_NAME};

use super::tour::{self, Client, ClientKind, Conn, Datagrams, Server, Sock};
use super::{CLIENT_IP, FLAGS, SERVER_IP, TIMEOUT, explain};
use crate::Failure;
use crate::args::{PcapFile, TapArgs, start_tapped};

/// How long to wait for a state the other side is about to reach (an ACK in flight).
const SETTLE: Duration = Duration::from_secs(1);

/// The demo's namespace, with its TUN: the kernel's side at 10.7.0.1, ustack's to be.
pub struct Lab {
    ns: NetNs,
    device: TunDevice,
}

impl Lab {
    /// Creates the namespace and the TUN, or says why the demo cannot have them.
    pub fn open() -> Result<Lab, String> {
        ustack::device::tun_support()?;
        let (ns, device) = LabNet::ipv4(CLIENT_IP, SERVER_IP)
            .open()
            .map_err(|e| format!("TUN devices seemed available, but setting one up failed: {e}"))?;
        Ok(Lab { ns, device })
    }
}

/// ustack on the TUN, and the kernel behind it.
pub struct World {
    /// ustack, at 10.7.0.2: the server side, driven through the socket API.
    server: Stack,
    client: KernelClient,
    started: Instant,
}

impl World {
    /// Starts ustack on the lab's TUN, tapped: traced, and recorded to `pcap` if given.
    pub fn start(lab: Lab, taps: &TapArgs, pcap: Option<PcapFile>) -> Result<World, Failure> {
        let config = StackConfig {
            addrs: vec![Cidr::new(SERVER_IP, 24).expect("24 bits fit an IPv4 address")],
            ..StackConfig::default()
        };
        // Trace lines with times since the first packet, which read better in a tour than
        // times of day.
        let formatter = TcpdumpFormatter::new().time_format(TimeFormat::Relative);
        let mut pcap = pcap;
        let server = start_tapped(lab.device, taps.faults(), &mut pcap, formatter, config)?;
        Ok(World { server, client: KernelClient { ns: lab.ns }, started: Instant::now() })
    }

    pub fn introduce(&self, taps: &TapArgs) {
        say!("Mode: the Linux kernel and ustack, over a TUN device.");
        explain(
            "Why: this process may create network namespaces and TUN devices (it runs as root), \
             so a real Linux kernel plays the client.",
        );
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
        explain(
            "Lines marked · are ustack's own logs: each connection as `tcp LOCAL <-> REMOTE` \
             from the logging stack's side, its RFC 9293 state changes, and its listen queues.",
        );
        if taps.trace {
            explain(&format!(
                "With --trace, `· in` and `· out` lines are the packets the server stack at {SERVER_IP} \
                 receives and sends, as tcpdump -nn prints them (seconds since the first packet; \
                 {FLAGS}). After each packet a stack receives, `· demux:` says where its demux sent it."
            ));
        }
    }
}

impl tour::World for World {
    fn server(&self) -> &dyn Server {
        &self.server
    }

    fn client(&self) -> &dyn Client {
        &self.client
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Server for Stack {
    fn socket(&self, ty: Type) -> io::Result<Box<dyn Sock>> {
        let socket = Socket::new(self, Domain::Inet, ty)?;
        set_timeouts(&socket)?;
        Ok(Box::new(socket))
    }
}

fn set_timeouts(socket: &Socket) -> io::Result<()> {
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.set_write_timeout(Some(TIMEOUT))?;
    Ok(())
}

fn ustack_state(socket: &Socket) -> String {
    socket.tcp_state().map_or_else(|| "CLOSED".into(), |s| s.to_string())
}

impl Sock for Socket {
    fn id(&self) -> SockId {
        Socket::id(self)
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<()> {
        Ok(Socket::bind(self, addr)?)
    }

    fn listen(&self, backlog: u32) -> io::Result<()> {
        Ok(Socket::listen(self, backlog)?)
    }

    fn accept(&self) -> io::Result<(Box<dyn Sock>, SocketAddr)> {
        let (socket, peer) = Socket::accept(self)?;
        set_timeouts(&socket)?;
        Ok((Box::new(socket), peer))
    }

    fn connect(&self, to: SocketAddr) -> io::Result<()> {
        Ok(self.connect_timeout(to, TIMEOUT)?)
    }
}

impl Conn for Socket {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        Ok(Socket::send(self, data)?)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(Socket::recv(self, buf)?)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        Ok(self.shutdown(Shutdown::Write)?)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(Socket::local_addr(self)?)
    }

    fn state(&self) -> String {
        ustack_state(self)
    }

    fn state_when(&self, want: &str) -> String {
        settle(|| ustack_state(self), want)
    }
}

impl Datagrams for Socket {
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        Ok(Socket::send_to(self, data, to)?)
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        Ok(Socket::recv_from(self, buf)?)
    }
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
        Ok(Box::new(socket))
    }
}

struct KernelConn {
    stream: std::net::TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    ns: NetNs,
}

impl KernelConn {
    fn kernel_state(&self) -> String {
        kernel_tcp_state(&self.ns, self.local, self.peer).unwrap_or("?").into()
    }
}

impl Conn for KernelConn {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        (&self.stream).write(data)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &self.stream, buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn state(&self) -> String {
        self.kernel_state()
    }

    fn state_when(&self, want: &str) -> String {
        settle(|| self.kernel_state(), want)
    }
}

impl Datagrams for std::net::UdpSocket {
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        std::net::UdpSocket::send_to(self, data, to)
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::net::UdpSocket::recv_from(self, buf)
    }
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
}
