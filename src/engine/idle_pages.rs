//! Giving an idle connection's buffer pages back to the kernel.
//!
//! A connection's buffers are reserved at their largest (the receive buffer at the most
//! its autotuned window grows to, the send buffer likewise), and a page becomes resident
//! when data first passes through it ([`super::buffers`]). smoltcp's rings never return
//! to their start, so data passing through a connection touches every page of a buffer in
//! turn, and without this a connection that had moved 6 MiB would hold 6 MiB until it
//! closed. Once a buffer has had nothing new for [`TRIM_IDLE`] and holds nothing smoltcp
//! will read, its pages are given back (`MADV_DONTNEED`); they come back as zero pages
//! when data next passes. A transfer in progress keeps its pages: touching them again
//! costs a page fault each.

use smoltcp::iface::SocketHandle;
use smoltcp::time::{Duration, Instant};

use super::Engine;
use super::buffers::Buffer;

/// How long a buffer must have had nothing new before its pages are given back.
pub const TRIM_IDLE: Duration = Duration::from_millis(500);

/// Data that must have passed through a buffer before its pages are worth giving back (it
/// touches at most this much, plus a page).
const TRIM_MIN: u32 = 64 * 1024;

/// Data that passed through one of a connection's buffers since its pages were last
/// given back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    bytes: u32,
    last: Option<Instant>,
}

impl Traffic {
    /// Counts `n` bytes passing at `now`.
    pub fn note(&mut self, n: usize, now: Instant) {
        self.bytes = self.bytes.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        self.last = Some(now);
    }

    /// When the buffer's pages are due to go back, if enough passed through it.
    fn trim_due(&self) -> Option<Instant> {
        self.last.filter(|_| self.bytes >= TRIM_MIN).map(|last| last + TRIM_IDLE)
    }
}

impl Engine {
    /// Gives back connection `handle`'s receive pages, and its send pages, each once its
    /// buffer has had nothing new for [`TRIM_IDLE`] and holds nothing smoltcp will read;
    /// otherwise says when to look again, if ever.
    pub(super) fn trim_if_idle(&mut self, handle: SocketHandle, now: Instant) -> Option<Instant> {
        let receive = self.trim_buffer_if_idle(handle, Buffer::Receive, now);
        let send = self.trim_buffer_if_idle(handle, Buffer::Send, now);
        [receive, send].into_iter().flatten().min()
    }

    fn trim_buffer_if_idle(&mut self, handle: SocketHandle, buffer: Buffer, now: Instant) -> Option<Instant> {
        let conn = self.conns.get(&handle)?;
        let due = match buffer {
            Buffer::Receive => conn.received.trim_due(),
            Buffer::Send => conn.queued.trim_due(),
        }?;
        if now < due {
            return Some(due);
        }
        if !self.holds_nothing(handle, buffer) {
            return Some(now + TRIM_IDLE);
        }
        // SAFETY: the buffer holds nothing smoltcp will read (`holds_nothing`).
        unsafe { self.buffers.trim(handle, buffer) };
        let conn = self.conns.get_mut(&handle)?;
        log::debug!(target: "ustack::buffers", "{}: idle, {buffer:?} buffer's pages given back", conn.tuple);
        match buffer {
            Buffer::Receive => conn.received = Traffic::default(),
            Buffer::Send => conn.queued = Traffic::default(),
        }
        None
    }

    /// Whether connection `handle`'s `buffer` holds nothing smoltcp will read: for the
    /// receive buffer, nothing unread and nothing out of order beyond RCV.NXT (only a
    /// connection whose every byte given to smoltcp is below RCV.NXT qualifies); for the
    /// send buffer, nothing unsent or unacknowledged.
    fn holds_nothing(&self, handle: SocketHandle, buffer: Buffer) -> bool {
        let (Some(conn), tcp) = (self.conns.get(&handle), self.tcp(handle)) else { return false };
        match buffer {
            Buffer::Receive => {
                let rcv_nxt = conn.rcv_nxt();
                rcv_nxt.is_some() && rcv_nxt == conn.rcv_high && tcp.recv_queue() == 0
            }
            Buffer::Send => tcp.send_queue() == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    /// A simulated client (4 MiB send buffer) and server (defaults) with a connection
    /// between them: (simulation, client socket, server socket).
    fn connected() -> (crate::sim::Simulation, super::super::SockId, super::super::SockId) {
        use crate::engine::{Domain, StackConfig, Type};
        use crate::sim::{LinkConfig, Simulation, node_addr};
        let config = |index: usize| StackConfig {
            addrs: vec![crate::Cidr::new(node_addr(index, 0).ip(), 24).unwrap()],
            ..StackConfig::default()
        };
        let client = StackConfig { tcp_buffer: 4 << 20, ..config(0) };
        let mut sim =
            Simulation::new(1, vec![("client", client), ("server", config(1))], LinkConfig::default(), 1500).unwrap();
        let l = sim.nodes[1].engine.socket(Domain::Inet, Type::Stream);
        sim.nodes[1].engine.bind(l, node_addr(1, 80)).unwrap();
        sim.nodes[1].engine.listen(l, 1).unwrap();
        let c = sim.nodes[0].engine.socket(Domain::Inet, Type::Stream);
        let now = sim.now();
        let _ = sim.nodes[0].engine.connect(now, c, node_addr(1, 80));
        let mut accepted = None;
        sim.run_until(sim.now() + Duration::from_secs(1), |_, nodes| {
            accepted = accepted.or(nodes[1].engine.accept(l).ok().map(|(s, _)| s));
            accepted.is_some()
        })
        .unwrap();
        (sim, c, accepted.unwrap())
    }

    /// Sends `len` bytes from the client, until the server has read them all if `read`, or
    /// for 100 ms.
    fn send(sim: &mut crate::sim::Simulation, (c, s): (u64, u64), len: usize, read: bool) {
        let data = vec![9u8; len];
        let (mut sent, mut got, mut buf) = (0, 0, vec![0; 64 * KIB]);
        let limit = sim.now() + Duration::from_millis(if read { 1000 } else { 100 });
        sim.run_until(limit, |_, nodes| {
            if let Ok(n) = nodes[0].engine.send(c, &data[sent..], false) {
                sent += n;
            }
            while read && let Ok(n @ 1..) = nodes[1].engine.recv(s, &mut buf) {
                got += n;
            }
            read && got == len
        });
        assert_eq!(sent, len);
    }

    fn server_handle(sim: &crate::sim::Simulation, s: u64) -> SocketHandle {
        match sim.nodes[1].engine.entries[&s].state {
            super::super::SockState::Connected(handle) => handle,
            _ => panic!("not connected"),
        }
    }

    #[test]
    fn an_idle_connection_gives_its_receive_pages_back_and_one_with_unread_data_keeps_them() {
        let (mut sim, c, s) = connected();
        let handle = server_handle(&sim, s);
        send(&mut sim, (c, s), 1 << 20, true);
        let pages = |sim: &crate::sim::Simulation| sim.nodes[1].engine.buffers.resident_pages(handle, Buffer::Receive);
        assert!(pages(&sim) >= 200, "1 MiB passed through: {} pages", pages(&sim));
        // Idle, everything read: given back once TRIM_IDLE has passed since the last data.
        sim.run_to(sim.now() + Duration::from_millis(300));
        assert!(pages(&sim) > 0);
        sim.run_to(sim.now() + TRIM_IDLE);
        assert_eq!(pages(&sim), 0);

        // Data left unread keeps its pages, and reads back intact.
        send(&mut sim, (c, s), 100 * KIB, false);
        sim.run_to(sim.now() + TRIM_IDLE * 3);
        assert!(pages(&sim) > 0);
        let mut buf = vec![0; 256 * KIB];
        let mut got = 0;
        while let Ok(n @ 1..) = sim.nodes[1].engine.recv(s, &mut buf[got..]) {
            got += n;
        }
        assert!(got >= 60 * KIB && buf[..got].iter().all(|&b| b == 9), "{got} bytes read intact");
    }

    #[test]
    fn a_sender_gives_its_send_pages_back_once_everything_is_acknowledged_and_idle() {
        let (mut sim, c, s) = connected();
        send(&mut sim, (c, s), 1 << 20, true);
        let client = match sim.nodes[0].engine.entries[&c].state {
            super::super::SockState::Connected(handle) => handle,
            _ => panic!("not connected"),
        };
        let pages = |sim: &crate::sim::Simulation| sim.nodes[0].engine.buffers.resident_pages(client, Buffer::Send);
        assert!(pages(&sim) >= 200, "1 MiB was sent: {} pages", pages(&sim));
        sim.run_to(sim.now() + TRIM_IDLE + Duration::from_millis(100));
        assert_eq!(pages(&sim), 0);
    }
}
