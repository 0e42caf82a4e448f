//! Local port bookkeeping: who holds which port, and RFC 6056 ephemeral port choice.
//!
//! smoltcp never picks ports and never refuses a second socket on a port; both are ustack's
//! job. A port is held by a socket from bind() (or the implicit bind of connect() and
//! listen()) until the socket is closed, and then by its connection until that connection
//! is fully gone (TIME-WAIT included), as in Linux.

use std::net::IpAddr;

use smoltcp::iface::SocketHandle;

use super::{HashMap, SockId};

/// The transport a port belongs to: TCP and UDP port spaces are separate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The range Linux's `ip_local_port_range` is usually told to use, and the IANA dynamic range.
pub const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// What holds a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An open socket (bound, listening, or a connected socket's own port).
    Socket { id: SockId, listening: bool },
    /// A connection outliving its socket (closing, TIME-WAIT) or accepted from a listener.
    Connection(SocketHandle),
}

#[derive(Debug, Clone, Copy)]
struct Use {
    addr: IpAddr,
    holder: Holder,
    /// SO_REUSEADDR of the socket the hold comes from (a listener's, for accepted
    /// connections): Linux lets a port be reused over a lingering connection only when
    /// both the old and the new socket set it.
    reuse: bool,
}

/// Which (protocol, port, address) each socket and connection holds.
#[derive(Default)]
pub struct Ports {
    uses: HashMap<(Proto, u16), Vec<Use>>,
}

/// Whether two local addresses overlap: the same address, or a wildcard covering the other.
/// An IPv6 wildcard covers IPv4 too (a dual-stack socket, Linux's default `IPV6_V6ONLY=0`).
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        _ if a == b => true,
        (IpAddr::V6(x), _) | (_, IpAddr::V6(x)) if x.is_unspecified() => true,
        (IpAddr::V4(x), IpAddr::V4(y)) => x.is_unspecified() || y.is_unspecified(),
        _ => false,
    }
}

impl Ports {
    /// Whether `addr:port` can be taken. With `reuse_addr` (SO_REUSEADDR), a port held only
    /// by connections — closing, TIME-WAIT, or accepted ones — whose sockets set
    /// SO_REUSEADDR too can be taken again (Linux's rule); a port held by another open
    /// socket never can.
    pub fn is_free(&self, proto: Proto, addr: IpAddr, port: u16, reuse_addr: bool) -> bool {
        let Some(uses) = self.uses.get(&(proto, port)) else { return true };
        uses.iter()
            .filter(|u| overlaps(u.addr, addr))
            .all(|u| reuse_addr && u.reuse && matches!(u.holder, Holder::Connection(_)))
    }

    /// Records that `holder` holds `addr:port`, with the SO_REUSEADDR of the socket it
    /// comes from. The caller checked [`Ports::is_free`].
    pub fn hold(&mut self, proto: Proto, addr: IpAddr, port: u16, holder: Holder, reuse: bool) {
        self.uses.entry((proto, port)).or_default().push(Use { addr, holder, reuse });
    }

    /// Hands what `from` holds on `port` over to `to` (a closed socket's port passes to its
    /// lingering connection), with the socket's SO_REUSEADDR as it was at close.
    pub fn transfer(&mut self, proto: Proto, port: u16, from: Holder, to: Holder, reuse: bool) {
        if let Some(uses) = self.uses.get_mut(&(proto, port)) {
            for u in uses.iter_mut().filter(|u| u.holder == from) {
                u.holder = to;
                u.reuse = reuse;
            }
        }
    }

    /// Marks a socket's hold as a listener's (a listener's port is never reused over), or
    /// no longer (a listener shut down).
    pub fn set_listening(&mut self, proto: Proto, port: u16, id: SockId, listening: bool) {
        if let Some(uses) = self.uses.get_mut(&(proto, port)) {
            for u in uses.iter_mut() {
                if let Holder::Socket { id: held, listening: was } = &mut u.holder
                    && *held == id
                {
                    *was = listening;
                }
            }
        }
    }

    /// Lets go of everything `holder` holds on `port`.
    pub fn release(&mut self, proto: Proto, port: u16, holder: Holder) {
        if let Some(uses) = self.uses.get_mut(&(proto, port)) {
            uses.retain(|u| u.holder != holder);
            if uses.is_empty() {
                self.uses.remove(&(proto, port));
            }
        }
    }

    /// An ephemeral port no live socket or connection uses, chosen as RFC 6056's
    /// algorithm 1 does: a random start, then the next free port, wrapping once.
    pub fn ephemeral(&self, proto: Proto, addr: IpAddr, random: u32) -> Option<u16> {
        let (lo, hi) = (*EPHEMERAL.start() as u32, *EPHEMERAL.end() as u32);
        let count = hi - lo + 1;
        let start = random % count;
        (0..count)
            .map(|i| (lo + (start + i) % count) as u16)
            .find(|&port| !self.uses.contains_key(&(proto, port)) && self.is_free(proto, addr, port, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    const ANY6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 7, 0, 2));

    fn sock(id: SockId) -> Holder {
        Holder::Socket { id, listening: false }
    }

    #[test]
    fn wildcard_conflicts_across_families_and_addresses() {
        let mut ports = Ports::default();
        ports.hold(Proto::Tcp, ANY4, 80, sock(1), false);
        assert!(!ports.is_free(Proto::Tcp, A, 80, false));
        assert!(!ports.is_free(Proto::Tcp, ANY6, 80, false), "[::] is dual-stack, so it overlaps 0.0.0.0");
        assert!(ports.is_free(Proto::Udp, A, 80, false), "UDP and TCP ports are separate");
        assert!(!ports.is_free(Proto::Tcp, A, 80, true), "SO_REUSEADDR never shares with an open socket");
    }

    #[test]
    fn reuse_addr_takes_over_lingering_connections_only() {
        let mut ports = Ports::default();
        ports.hold(Proto::Tcp, A, 80, sock(1), true);
        ports.transfer(Proto::Tcp, 80, sock(1), Holder::Connection(SocketHandle::default()), true);
        assert!(!ports.is_free(Proto::Tcp, A, 80, false));
        assert!(ports.is_free(Proto::Tcp, A, 80, true));
        ports.release(Proto::Tcp, 80, Holder::Connection(SocketHandle::default()));
        assert!(ports.is_free(Proto::Tcp, A, 80, false));
        // Both sockets must set SO_REUSEADDR: not the old one, no reuse (Linux).
        ports.hold(Proto::Tcp, A, 81, sock(2), false);
        ports.transfer(Proto::Tcp, 81, sock(2), Holder::Connection(SocketHandle::default()), false);
        assert!(!ports.is_free(Proto::Tcp, A, 81, true));
    }

    #[test]
    fn ephemeral_ports_are_in_range_spread_and_skip_used_ones() {
        let mut ports = Ports::default();
        let first = ports.ephemeral(Proto::Tcp, A, 7).unwrap();
        assert!(EPHEMERAL.contains(&first));
        ports.hold(Proto::Tcp, A, first, sock(1), false);
        let second = ports.ephemeral(Proto::Tcp, A, 7).unwrap();
        assert_ne!(first, second, "a held port is skipped");
        assert_ne!(ports.ephemeral(Proto::Tcp, A, 7), ports.ephemeral(Proto::Tcp, A, 9000));
    }
}
