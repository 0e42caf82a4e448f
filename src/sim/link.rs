//! The simulated link: it carries each packet to the node that has its destination
//! address, after a fixed one-way delay, losing or damaging it by chance. Every chance is
//! drawn from the link's own seeded generator, in the order packets are sent, so a
//! simulation's faults are as repeatable as the rest of it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::time::Duration;

use smoltcp::time::Instant;

use crate::engine::random::Rng;
use crate::packet::decode;
use crate::packet::{Ip, Net, TcpFlags, Transport};

/// What a link does to packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// The chance, from 0 to 1, that a packet is lost.
    pub drop_chance: f64,
    /// The chance, from 0 to 1, that a packet that is not lost has one byte of its IP
    /// payload damaged (which the TCP, UDP or ICMP checksum must catch).
    pub corrupt_chance: f64,
    /// How long each packet takes to cross.
    pub delay: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig { drop_chance: 0.0, corrupt_chance: 0.0, delay: Duration::from_millis(1) }
    }
}

/// What became of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Arrived intact (after the link's delay).
    Delivered,
    /// Lost, by chance or by a [`Link::lose_if`] rule.
    Dropped,
    /// Arrived with a byte damaged.
    Corrupted,
    /// No node has its destination address.
    NoRoute,
}

impl Fate {
    /// How a report draws a packet that met this fate: one that never arrived (lost, or
    /// sent where no node is) as lost.
    pub fn mark(self) -> crate::observe::report::Mark {
        use crate::observe::report::Mark;
        match self {
            Fate::Delivered => Mark::Seen,
            Fate::Dropped | Fate::NoRoute => Mark::Lost,
            Fate::Corrupted => Mark::Damaged,
        }
    }
}

/// How many packets met each fate, and how many TCP segments carried data or a SYN or FIN
/// that had been sent before (retransmissions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Packets put on the link.
    pub sent: u64,
    /// Of those, lost.
    pub dropped: u64,
    /// Damaged.
    pub corrupted: u64,
    /// For an address no node has.
    pub no_route: u64,
    /// TCP segments resending data, a SYN or a FIN.
    pub retransmissions: u64,
}

/// A packet on its way.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    /// Sent order, so packets due at the same time arrive in the order they were sent.
    order: u64,
    to: usize,
    frame: Vec<u8>,
}

/// A rule that loses chosen packets: given when a packet is sent, by which node, and its
/// bytes, it says whether the packet is lost. See [`Link::lose_if`].
pub type LossRule = Box<dyn FnMut(Instant, usize, &[u8]) -> bool>;

/// See the [module docs](self).
pub struct Link {
    config: LinkConfig,
    /// Loses the packets it picks, before any chance is drawn.
    rule: Option<LossRule>,
    /// Each node's addresses.
    addrs: Vec<Vec<IpAddr>>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    sent: u64,
    rng: Rng,
    counters: LinkCounters,
    /// The furthest sequence number sent so far in each direction of each TCP conversation.
    highest: crate::engine::HashMap<(std::net::SocketAddr, std::net::SocketAddr), u32>,
}

impl Link {
    pub(crate) fn new(config: LinkConfig, addrs: Vec<Vec<IpAddr>>, seed: u64) -> Link {
        Link {
            config,
            rule: None,
            addrs,
            in_flight: BinaryHeap::new(),
            sent: 0,
            rng: Rng::new(seed),
            counters: LinkCounters::default(),
            highest: Default::default(),
        }
    }

    /// What happened on the link so far.
    pub fn counters(&self) -> LinkCounters {
        self.counters
    }

    /// Loses every packet `rule` picks (given the time it is sent, the sending node and its
    /// bytes), on top of the configured chances: for a test that loses one chosen packet
    /// (the first data segment, a FIN) and watches the recovery. A lost packet is counted
    /// as dropped; packets the rule leaves alone meet the chances as before (the rule
    /// draws nothing from the link's generator, but a packet it loses draws nothing
    /// either, so the chances later packets meet are not those of a run without it).
    /// Replaces any earlier rule.
    pub fn lose_if(&mut self, rule: impl FnMut(Instant, usize, &[u8]) -> bool + 'static) {
        self.rule = Some(Box::new(rule));
    }

    /// Puts `frame` on its way to node `to`, to arrive at `at`: a packet from outside the
    /// simulation (a peer a test plays by hand). It meets no loss or damage and is not
    /// counted.
    pub fn inject(&mut self, at: Instant, to: usize, frame: Vec<u8>) {
        self.sent += 1;
        self.in_flight.push(Reverse(InFlight { at, order: self.sent, to, frame }));
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Puts a packet sent by node `from` at `now` on the link; says what became of it.
    pub fn send(&mut self, now: Instant, from: usize, packet: &[u8]) -> Fate {
        self.counters.sent += 1;
        let Net::Ip(ip) = decode(packet).net else {
            self.counters.no_route += 1;
            return Fate::NoRoute;
        };
        self.count_retransmission(&ip);
        // A node does not reach itself over the link (its own packets loop back inside it).
        let Some(to) = self.addrs.iter().position(|a| a.contains(&ip.dst)).filter(|&to| to != from) else {
            self.counters.no_route += 1;
            return Fate::NoRoute;
        };
        let ruled = self.rule.as_mut().is_some_and(|rule| rule(now, from, packet));
        if ruled || self.chance(self.config.drop_chance) {
            self.counters.dropped += 1;
            return Fate::Dropped;
        }
        let mut frame = packet.to_vec();
        let mut fate = Fate::Delivered;
        if self.chance(self.config.corrupt_chance) {
            let header = ip.header_len.min(frame.len());
            if frame.len() > header {
                let at = header + (self.rng.next_u64() as usize) % (frame.len() - header);
                frame[at] ^= (self.rng.next_u32() % 255 + 1) as u8;
                self.counters.corrupted += 1;
                fate = Fate::Corrupted;
            }
        }
        self.sent += 1;
        let at = now + smoltcp::time::Duration::from(self.config.delay);
        self.in_flight.push(Reverse(InFlight { at, order: self.sent, to, frame }));
        fate
    }

    /// A TCP segment whose data, SYN or FIN starts before the furthest point already sent
    /// in its direction is a retransmission.
    fn count_retransmission(&mut self, ip: &Ip) {
        let Transport::Tcp(tcp) = &ip.transport else { return };
        let occupies =
            tcp.payload_len as u32 + u32::from(tcp.flags.has(TcpFlags::SYN)) + u32::from(tcp.flags.has(TcpFlags::FIN));
        if occupies == 0 {
            return;
        }
        let key = (std::net::SocketAddr::new(ip.src, tcp.sport), std::net::SocketAddr::new(ip.dst, tcp.dport));
        let end = tcp.seq.wrapping_add(occupies);
        match self.highest.get_mut(&key) {
            Some(highest) => {
                if (tcp.seq.wrapping_sub(*highest) as i32) < 0 {
                    self.counters.retransmissions += 1;
                }
                if (end.wrapping_sub(*highest) as i32) > 0 {
                    *highest = end;
                }
            }
            None => {
                self.highest.insert(key, end);
            }
        }
    }

    /// The next packet due by `now`, with the node it is for.
    pub fn deliver_due(&mut self, now: Instant) -> Option<(usize, Vec<u8>)> {
        if self.in_flight.peek().is_none_or(|Reverse(p)| p.at > now) {
            return None;
        }
        let Reverse(p) = self.in_flight.pop()?;
        Some((p.to, p.frame))
    }

    /// When the next packet arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(p)| p.at)
    }
}
