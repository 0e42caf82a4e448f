//! The raw-smoltcp baseline: smoltcp's own `Interface` and `SocketSet` driving one TCP
//! socket over the same [`TunDevice`] ustack uses, with the poll loop of smoltcp's
//! `benchmark` example — poll, move data, sleep in poll(2) until the device is readable
//! or `poll_delay` passes — and nothing of ustack: no stack thread, no lock, no demux, no
//! socket API. Data is dequeued in place (`recv(|buf| ...)`) and enqueued without a copy
//! from an application buffer, as that example does — or, with [`RawEngine::copying`],
//! copied out of and into a [`bulk::CHUNK`]-byte buffer as an application of a socket API
//! gets it: what the Berkeley API's copy costs, apart from ustack.
//!
//! [`RawEngine::connects`] serves sequential connects with the same loop, a listening
//! socket always in place.
//!
//! It lives in the library, not in a separate crate or example, so that it is built and
//! type-checked with everything else (it cannot rot) and runs in the same process and the
//! same run as the figures it is a baseline for.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpCidr};

use super::bulk::{self, Direction, Transfer};
use super::connect;
use super::lab::TUN_STACK;
use super::peer::{IO_TIMEOUT, STOP_CHECK};
use ustack::device::{Link, TunDevice};
use ustack::sys::NetNs;

/// The longest the loop sleeps: it also checks its deadline.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// smoltcp on a TUN, with nothing between them.
pub struct RawEngine {
    device: TunDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// Bytes of receive and of send buffer per socket.
    buffer: usize,
    /// What the timestamps smoltcp sees count from.
    epoch: Instant,
    /// Data goes through an application buffer of this, as with a socket API.
    app_buffer: Option<Vec<u8>>,
}

impl RawEngine {
    /// An interface at `addr` on `device`, with TCP sockets of `buffer`-byte buffers.
    pub fn new(mut device: TunDevice, addr: IpCidr, buffer: usize) -> RawEngine {
        let epoch = Instant::now();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = ustack::engine::random::from_os();
        let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            // One address always fits.
            let _ = addrs.push(addr);
        });
        RawEngine { device, iface, sockets: SocketSet::new(Vec::new()), buffer, epoch, app_buffer: None }
    }

    /// The engine copying received data out into an application buffer (`recv_slice`) and
    /// data to send in from one (`send_slice`), [`bulk::CHUNK`] bytes at a time, as read()
    /// and write() on a socket do.
    pub fn copying(mut self) -> RawEngine {
        self.app_buffer = Some(vec![0x5a; bulk::CHUNK]);
        self
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// One bulk transfer: a fresh socket listens on `port`, a kernel client in
    /// `client_ns` connects and sends to it or receives from it for `duration`.
    pub fn transfer(
        &mut self,
        client_ns: &NetNs,
        port: u16,
        dir: Direction,
        duration: Duration,
    ) -> io::Result<bulk::Measured> {
        let handle = self.listen(port)?;
        let addr = SocketAddrV4::new(TUN_STACK, port);
        let client = client_ns.spawn(move || bulk::kernel_client(addr, dir, duration))?;
        let served = self.serve(handle, dir, duration);
        self.sockets.remove(handle);
        let client = super::peer::join(client);
        match (served, client) {
            (Err(s), Err(c)) => Err(io::Error::new(s.kind(), format!("{s} (client: {c})"))),
            (s, c) => c?.measured(s?),
        }
    }

    /// A new socket listening on `port`.
    fn listen(&mut self, port: u16) -> io::Result<SocketHandle> {
        let size = self.buffer;
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; size]), tcp::SocketBuffer::new(vec![0; size]));
        socket.listen(port).map_err(|e| io::Error::other(format!("listen on {port}: {e}")))?;
        Ok(self.sockets.add(socket))
    }

    /// Sequential connects to `port`, measured by [`connect::rate`]'s client in
    /// `client_ns` for `duration` or `max` connections, this loop serving them.
    pub fn connects(
        &mut self,
        client_ns: &NetNs,
        port: u16,
        duration: Duration,
        max: usize,
    ) -> io::Result<connect::Rate> {
        let addr = SocketAddrV4::new(TUN_STACK, port);
        connect::rate_against(|stop| self.serve_connects(port, stop), client_ns, addr, duration, max)
    }

    /// The poll loop for sequential connects, until `stop`: each connection read to its
    /// end, then closed, then removed.
    fn serve_connects(&mut self, port: u16, stop: &AtomicBool) -> io::Result<()> {
        let served = self.connects_loop(port, stop);
        // The set holds only this loop's sockets.
        let handles: Vec<SocketHandle> = self.sockets.iter().map(|(handle, _)| handle).collect();
        for handle in handles {
            self.sockets.remove(handle);
        }
        served
    }

    /// smoltcp has no backlog: the listening socket becomes the connection. So this loop
    /// takes packets one at a time and puts a new listening socket in place as soon as the
    /// old one took a SYN; a SYN behind it in the same batch (the client's next connect,
    /// queued after its ACK and FIN) would otherwise be answered with a RST.
    fn connects_loop(&mut self, port: u16, stop: &AtomicBool) -> io::Result<()> {
        let mut listening = self.listen(port)?;
        let mut connections: Vec<SocketHandle> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = self.now();
            self.iface.poll_maintenance(now);
            while self.iface.poll_ingress_single(now, &mut self.device, &mut self.sockets)
                != PollIngressSingleResult::None
            {
                if self.sockets.get::<tcp::Socket>(listening).state() != tcp::State::Listen {
                    connections.push(listening);
                    listening = self.listen(port)?;
                }
            }
            connections.retain(|&handle| {
                let socket = self.sockets.get_mut::<tcp::Socket>(handle);
                while socket.can_recv() {
                    // Nothing to do with the data: the client sends none before its FIN.
                    let _ = socket.recv(|buf| (buf.len(), ()));
                }
                // The client's FIN came: send ours, as the acceptor's close() does.
                if socket.state() == tcp::State::CloseWait {
                    socket.close();
                }
                // TIME-WAIT only if our FIN crossed the client's; the client keeps one anyway.
                let over = matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait);
                if over {
                    self.sockets.remove(handle);
                }
                !over
            });
            while self.iface.poll_egress(now, &mut self.device, &mut self.sockets) != PollResult::None {}
            if let Some(e) = self.device.take_error() {
                return Err(e);
            }
            let now = self.now();
            match self.iface.poll_delay(now, &self.sockets) {
                Some(d) if d == smoltcp::time::Duration::ZERO => {}
                delay => self.wait(delay.map(Duration::from).unwrap_or(STOP_CHECK).min(STOP_CHECK)),
            }
        }
        Ok(())
    }

    /// The poll loop for one connection, until it is over.
    fn serve(&mut self, handle: SocketHandle, dir: Direction, duration: Duration) -> io::Result<Option<Transfer>> {
        let deadline = Instant::now() + duration + IO_TIMEOUT;
        // Receiving: when the first data came, bytes after it, when the FIN came.
        let mut first: Option<Instant> = None;
        let mut bytes = 0u64;
        let mut received: Option<Transfer> = None;
        // Sending: when the connection was established.
        let mut sending_since: Option<Instant> = None;
        let mut closed = false;
        loop {
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "raw smoltcp: transfer did not finish"));
            }
            let now = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            if let Some(e) = self.device.take_error() {
                return Err(e);
            }
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            match dir {
                Direction::ToServer => {
                    while socket.can_recv() {
                        let n = match &mut self.app_buffer {
                            Some(app) => socket.recv_slice(app).unwrap_or(0),
                            None => socket.recv(|buf| (buf.len(), buf.len())).unwrap_or(0),
                        };
                        if first.is_some() {
                            bytes += n as u64;
                        } else {
                            first = Some(Instant::now());
                        }
                    }
                    if let (Some(start), None, false) = (first, received, socket.may_recv()) {
                        received = Some(Transfer { bytes, elapsed: start.elapsed() });
                        socket.close();
                    }
                    if received.is_some() && matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
                        return Ok(received);
                    }
                }
                Direction::FromServer => {
                    if sending_since.is_none() && socket.may_send() {
                        sending_since = Some(Instant::now());
                    }
                    if let Some(since) = sending_since {
                        if since.elapsed() < duration {
                            while socket.can_send() {
                                let sent = match &self.app_buffer {
                                    Some(app) => socket.send_slice(app).map(drop),
                                    None => socket.send(|buf| (buf.len(), ())),
                                };
                                if sent.is_err() {
                                    break;
                                }
                            }
                        } else if !closed {
                            socket.close();
                            closed = true;
                        }
                    }
                    // All data and the FIN acknowledged: the client has read everything.
                    if closed
                        && matches!(socket.state(), tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed)
                    {
                        return Ok(None);
                    }
                }
            }
            let now = self.now();
            match self.iface.poll_delay(now, &self.sockets) {
                Some(d) if d == smoltcp::time::Duration::ZERO => {}
                delay => self.wait(delay.map(Duration::from).unwrap_or(MAX_SLEEP).min(MAX_SLEEP)),
            }
        }
    }

    /// Sleeps until the TUN is readable or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(self.device.as_fd(), PollFlags::POLLIN)];
        // EINTR just means another round.
        let _ = nix::poll::poll(&mut fds, PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX));
    }
}
