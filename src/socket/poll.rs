//! poll(): wait until any of several sockets is ready.

use std::ops::{BitOr, BitOrAssign};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::socket::tcp;

use super::datagram::discard_unwanted;
use super::{Errno, Result, Socket, Type};
use crate::stack::{Core, SockState};

/// poll(2) event bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events(u8);

impl Events {
    pub const NONE: Events = Events(0);
    /// Data to read, a connection to accept, or end of stream.
    pub const IN: Events = Events(1);
    /// Room to send (or a connect() finished, either way).
    pub const OUT: Events = Events(2);
    /// An error is pending (read it with recv/send/connect).
    pub const ERR: Events = Events(4);
    /// Both directions are closed (or the socket was never connected).
    pub const HUP: Events = Events(8);

    pub fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn intersects(self, other: Events) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Events {
    type Output = Events;
    fn bitor(self, rhs: Events) -> Events {
        Events(self.0 | rhs.0)
    }
}

impl BitOrAssign for Events {
    fn bitor_assign(&mut self, rhs: Events) {
        self.0 |= rhs.0;
    }
}

/// One socket to watch, like `struct pollfd`.
#[derive(Debug)]
pub struct PollFd<'a> {
    pub socket: &'a Socket,
    /// What to wait for ([`Events::ERR`] and [`Events::HUP`] are always reported).
    pub events: Events,
    /// What is ready, filled in by [`poll`].
    pub revents: Events,
}

impl<'a> PollFd<'a> {
    pub fn new(socket: &'a Socket, events: Events) -> Self {
        PollFd { socket, events, revents: Events::NONE }
    }
}

fn readiness(core: &mut Core, socket: &Socket) -> Events {
    let Some(entry) = core.entries.get(&socket.id) else { return Events::ERR | Events::HUP };
    let mut ready = Events::NONE;
    match &entry.state {
        // Linux: an unconnected TCP socket is writable (send fails at once) and hung up;
        // an unbound UDP socket is just writable.
        SockState::Idle if entry.ty == Type::Stream => ready |= Events::OUT | Events::HUP,
        SockState::Idle => ready |= Events::OUT,
        SockState::Listening(l) => {
            if !l.accept_queue.is_empty() {
                ready |= Events::IN;
            }
        }
        SockState::Connected(handle) => {
            let conn = &core.conns[handle];
            let tcp = core.tcp(*handle);
            let state = tcp.state();
            let connecting = matches!(state, tcp::State::SynSent | tcp::State::SynReceived);
            if conn.pending_error.is_some() {
                ready |= Events::ERR | Events::IN | Events::OUT;
            }
            if tcp.can_recv() || entry.shut_read || (!connecting && !tcp.may_recv()) {
                ready |= Events::IN;
            }
            // Writable when there is room, or when a send would fail at once (EPIPE).
            if !connecting && (tcp.can_send() || !tcp.may_send()) {
                ready |= Events::OUT;
            }
            if state == tcp::State::Closed || (!tcp.may_send() && !tcp.may_recv() && !connecting) {
                ready |= Events::HUP;
            }
        }
        SockState::Udp { handle, peer } => {
            let (domain, peer, shut_read) = (entry.domain, *peer, entry.shut_read);
            let udp = core.udp_receiving(*handle);
            discard_unwanted(udp, domain, peer);
            if udp.can_recv() || shut_read {
                ready |= Events::IN;
            }
            if udp.can_send() {
                ready |= Events::OUT;
            }
        }
    }
    ready
}

/// Waits until at least one socket is ready for what it asks, or `timeout` passes
/// (`None`: no limit; zero: just look). Returns how many sockets have non-empty
/// `revents`. All sockets must belong to the same stack (EINVAL otherwise).
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> Result<usize> {
    let Some(first) = fds.first() else {
        if let Some(t) = timeout {
            std::thread::sleep(t);
        }
        return Ok(0);
    };
    let shared = first.socket.shared().clone();
    if fds.iter().any(|fd| !Arc::ptr_eq(fd.socket.shared(), &shared)) {
        return Err(Errno::EINVAL);
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut core = shared.lock();
    loop {
        let mut ready = 0;
        for fd in fds.iter_mut() {
            let now = readiness(&mut core, fd.socket);
            fd.revents = Events(now.0 & (fd.events.0 | Events::ERR.0 | Events::HUP.0));
            if !fd.revents.is_empty() {
                ready += 1;
            }
        }
        if ready > 0 {
            return Ok(ready);
        }
        if core.down.is_some() {
            return Err(Errno::ENETDOWN);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(0);
        }
        core = shared.wait(core, left).0;
    }
}
