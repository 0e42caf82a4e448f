//! Handing smoltcp one socket at a time.
//!
//! smoltcp's `Interface` looks at every socket of the set it is given: for every received
//! packet (`Socket::accepts`, until one matches) and for every egress and timer poll
//! (`dispatch`, `poll_at`). With thousands of connections that made each packet and each
//! round cost O(connections). ustack's demux already knows which socket a packet is for,
//! and ustack knows which sockets were touched or have a timer due, so smoltcp never sees
//! the set of all sockets: the one socket in question is swapped into a set of its own
//! (a few hundred bytes moved), and smoltcp works on that. It stays there until smoltcp
//! needs another one, so a run of packets for one connection — bulk transfer — costs no
//! swapping at all; [`OneSocket::get`] finds a socket wherever it is.
//!
//! A packet for no socket goes to the set with only placeholders in it, where smoltcp
//! answers as it would have: RST for TCP, port unreachable for UDP, echo replies for ping.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{AnySocket, tcp, udp};
use smoltcp::time::Instant;

use super::HashMap;

/// A socket of the stack's set, with its type (smoltcp's typed accessors panic on a
/// mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Which {
    Tcp(SocketHandle),
    Udp(SocketHandle),
}

impl Which {
    fn handle(self) -> SocketHandle {
        match self {
            Which::Tcp(h) | Which::Udp(h) => h,
        }
    }
}

/// A socket set of one: a TCP and a UDP placeholder, either of which can be swapped for
/// a real socket while smoltcp works on it.
pub struct OneSocket {
    pub set: SocketSet<'static>,
    tcp: SocketHandle,
    udp: SocketHandle,
    /// The socket of the stack's set that is swapped in here now (its place in the stack's
    /// set holds the placeholder).
    current: Option<Which>,
}

impl OneSocket {
    pub fn new() -> OneSocket {
        let mut set = SocketSet::new(Vec::with_capacity(2));
        // Closed and unbound: they accept no packet and send nothing.
        let tcp = set.add(tcp::Socket::new(tcp::SocketBuffer::new(Vec::new()), tcp::SocketBuffer::new(Vec::new())));
        let udp = set.add(udp::Socket::new(
            udp::PacketBuffer::new(Vec::new(), Vec::new()),
            udp::PacketBuffer::new(Vec::new(), Vec::new()),
        ));
        OneSocket { set, tcp, udp, current: None }
    }

    /// Runs `f` on a set holding socket `which` of `sockets` (and a placeholder of the
    /// other type), or only placeholders for None. `which` must be a live socket of its
    /// type in `sockets`.
    pub fn with<R>(
        &mut self,
        sockets: &mut SocketSet<'static>,
        which: Option<Which>,
        f: impl FnOnce(&mut SocketSet<'static>) -> R,
    ) -> R {
        self.hold(sockets, which);
        f(&mut self.set)
    }

    /// Makes `which` the socket swapped in, putting the current one back first.
    pub fn hold(&mut self, sockets: &mut SocketSet<'static>, which: Option<Which>) {
        if self.current != which {
            if let Some(current) = self.current {
                self.swap(sockets, current);
            }
            if let Some(which) = which {
                self.swap(sockets, which);
            }
            self.current = which;
        }
    }

    /// Socket `which` of `sockets` (a `T`), wherever it is now.
    pub fn get<'a, T: AnySocket<'static>>(&'a self, sockets: &'a SocketSet<'static>, which: Which) -> &'a T {
        match self.placeholder_of(which) {
            Some(here) => self.set.get(here),
            None => sockets.get(which.handle()),
        }
    }

    pub fn get_mut<'a, T: AnySocket<'static>>(
        &'a mut self,
        sockets: &'a mut SocketSet<'static>,
        which: Which,
    ) -> &'a mut T {
        match self.placeholder_of(which) {
            Some(here) => self.set.get_mut(here),
            None => sockets.get_mut(which.handle()),
        }
    }

    /// Where in `set` socket `which` is, if it is swapped in.
    fn placeholder_of(&self, which: Which) -> Option<SocketHandle> {
        (self.current == Some(which)).then_some(match which {
            Which::Tcp(_) => self.tcp,
            Which::Udp(_) => self.udp,
        })
    }

    fn swap(&mut self, sockets: &mut SocketSet<'static>, which: Which) {
        match which {
            Which::Tcp(h) => {
                std::mem::swap(sockets.get_mut::<tcp::Socket>(h), self.set.get_mut::<tcp::Socket>(self.tcp))
            }
            Which::Udp(h) => {
                std::mem::swap(sockets.get_mut::<udp::Socket>(h), self.set.get_mut::<udp::Socket>(self.udp))
            }
        }
    }
}

/// When each socket next wants smoltcp's attention (its `poll_at`), soonest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Which)>>,
    /// The current deadline of each socket that has one; heap entries that disagree are
    /// stale and skipped.
    due: HashMap<Which, Instant>,
}

impl Timers {
    /// Sets (or with None, clears) `which`'s deadline.
    pub fn set(&mut self, which: Which, at: Option<Instant>) {
        match at {
            None => {
                self.due.remove(&which);
            }
            Some(at) => {
                if self.due.insert(which, at) != Some(at) {
                    self.heap.push(Reverse((at, which)));
                }
            }
        }
        // Deadlines that move on every packet leave stale entries behind; rebuild now and
        // then so the heap stays proportional to the sockets.
        if self.heap.len() > 4 * self.due.len() + 1024 {
            self.heap = self.due.iter().map(|(&w, &at)| Reverse((at, w))).collect();
        }
    }

    /// Takes the sockets whose deadline has come into `out`.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<Which>) {
        while let Some(&Reverse((at, which))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.due.get(&which) == Some(&at) {
                self.due.remove(&which);
                out.push(which);
            }
        }
    }

    /// The soonest deadline, if any (possibly a stale one: waking early is harmless).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Forgets a socket that is gone.
    pub fn forget(&mut self, which: Which) {
        self.due.remove(&which);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_current_deadlines_come_due() {
        let mut sockets = SocketSet::new(Vec::new());
        let a = Which::Tcp(
            sockets.add(tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 64]), tcp::SocketBuffer::new(vec![0; 64]))),
        );
        let mut timers = Timers::default();
        timers.set(a, Some(Instant::from_millis(10)));
        timers.set(a, Some(Instant::from_millis(30)));
        let mut due = Vec::new();
        timers.take_due(Instant::from_millis(20), &mut due);
        assert!(due.is_empty(), "the 10 ms deadline was replaced");
        assert_eq!(timers.next(), Some(Instant::from_millis(30)));
        timers.take_due(Instant::from_millis(30), &mut due);
        assert_eq!(due, [a]);
        timers.set(a, Some(Instant::from_millis(40)));
        timers.forget(a);
        due.clear();
        timers.take_due(Instant::from_millis(50), &mut due);
        assert!(due.is_empty(), "a forgotten socket never comes due");
    }
}
