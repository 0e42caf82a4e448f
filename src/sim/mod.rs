//! The simulator: the second driver of the engine. It runs several engines in one thread
//! over a simulated link on a virtual clock, so that what TCP does — the handshake, the
//! backlog, loss and recovery, the close — can be watched without root, and tested
//! without flakes: the same seed gives the same run, packet for packet, on any machine,
//! and virtual time runs as fast as the CPU allows (a 60 s retransmission timeout costs
//! nothing to wait for).
//!
//! [`Simulation`] is the network: nodes (an engine each) joined by a [`link::Link`] that
//! delays, loses and damages packets as told, with every random choice drawn from the
//! seed. [`echo`] is the workload `ustack sim` runs on it: clients that send a pattern and
//! check what comes back, and an echo server with a backlog and a slow accept().

use std::net::SocketAddr;
use std::time::Duration;

use smoltcp::phy::{DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::engine::random::Rng;
use crate::engine::{Engine, StackConfig};

pub mod echo;
pub mod link;

pub use link::{Fate, Link, LinkConfig, LinkCounters};

/// One stack of a simulation, with its address.
pub struct Node {
    /// Its name in traces ("client", "server").
    pub name: &'static str,
    /// Its engine, to make socket calls on between steps.
    pub engine: Engine,
    /// When the engine next wants to be polled.
    deadline: Option<Instant>,
}

/// A packet crossing the link, as the simulation saw it (for traces and captures).
#[derive(Debug, Clone)]
pub struct Crossing {
    /// When it was sent.
    pub at: Instant,
    /// The node that sent it.
    pub from: usize,
    /// The IP packet as sent.
    pub packet: Vec<u8>,
    /// What the link did to it.
    pub fate: Fate,
}

/// Several engines on one simulated link and one virtual clock; see the [module docs](self).
pub struct Simulation {
    /// The stacks, node `i` at 10.0.0.(i + 1) ([`node_addr`]).
    pub nodes: Vec<Node>,
    /// The link between them (losing chosen packets: [`Link::lose_if`]).
    pub link: Link,
    now: Instant,
    /// Everything that crossed the link since the last [`Simulation::take_crossings`].
    crossings: Vec<Crossing>,
    /// Keep crossings at all (tracing or recording); without, nothing is kept.
    keep_crossings: bool,
}

/// The device every simulated node has: IP medium, Ethernet-sized MTU unless told.
pub fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    caps
}

/// A seed for node `index` of a simulation seeded with `seed`: each engine its own.
pub fn node_seed(seed: u64, index: usize) -> u64 {
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    rng.next_u64()
}

impl Simulation {
    /// A simulation of `nodes` (a name and a configuration each; their seeds are set from
    /// `seed`) on a link set up by `link`, at virtual time zero.
    pub fn new(
        seed: u64,
        nodes: Vec<(&'static str, StackConfig)>,
        link: LinkConfig,
        mtu: usize,
    ) -> Result<Simulation, String> {
        let now = Instant::ZERO;
        let nodes = nodes
            .into_iter()
            .enumerate()
            .map(|(i, (name, mut config))| {
                config.seed = Some(node_seed(seed, i));
                Ok(Node { name, engine: Engine::new(config, capabilities(mtu), now)?, deadline: None })
            })
            .collect::<Result<Vec<Node>, String>>()?;
        let addrs = nodes.iter().map(|n| n.engine.config().addrs.iter().map(|c| c.addr()).collect()).collect();
        Ok(Simulation {
            nodes,
            link: Link::new(link, addrs, node_seed(seed, usize::MAX)),
            now,
            crossings: Vec::new(),
            keep_crossings: false,
        })
    }

    /// Keep what crosses the link, for [`Simulation::take_crossings`].
    pub fn keep_crossings(&mut self, keep: bool) {
        self.keep_crossings = keep;
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The packets that crossed the link since the last call, in the order they were sent.
    pub fn take_crossings(&mut self) -> Vec<Crossing> {
        std::mem::take(&mut self.crossings)
    }

    /// Runs every engine until nothing more happens at this instant: due packets are
    /// delivered, each engine is polled, what it sent goes onto the link. `app` runs
    /// between rounds (it makes socket calls on the nodes' engines) and says whether it
    /// did anything. Bounded: a workload that keeps finding work at one instant gives up
    /// the instant after 10,000 rounds.
    pub fn settle(&mut self, mut app: impl FnMut(Instant, &mut [Node]) -> bool) {
        for _ in 0..10_000 {
            let mut busy = false;
            while let Some((to, mut frame)) = self.link.deliver_due(self.now) {
                self.nodes[to].engine.ingress(self.now, &mut frame);
                busy = true;
            }
            busy |= app(self.now, &mut self.nodes);
            for (i, node) in self.nodes.iter_mut().enumerate() {
                node.deadline = node.engine.poll(self.now);
                let outbox = node.engine.outbox();
                for packet in outbox.packets() {
                    let fate = self.link.send(self.now, i, packet);
                    busy = true;
                    if self.keep_crossings {
                        self.crossings.push(Crossing { at: self.now, from: i, packet: packet.to_vec(), fate });
                    }
                }
                outbox.clear();
                busy |= node.deadline.is_some_and(|at| at <= self.now);
            }
            if !busy {
                return;
            }
        }
    }

    /// When something next happens without the workload doing anything: a packet
    /// arrives, or an engine's timer comes due.
    pub fn next_event(&self) -> Option<Instant> {
        let engines = self.nodes.iter().filter_map(|n| n.deadline).min();
        match (engines, self.link.next_arrival()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the virtual clock to `at` (never backwards).
    pub fn advance_to(&mut self, at: Instant) {
        self.now = self.now.max(at);
    }

    /// Hands node `to` a packet from outside the simulation (a peer a test plays by hand:
    /// what the nodes send to an address no node has is in [`Simulation::take_crossings`],
    /// marked [`Fate::NoRoute`]). It arrives in the next [`Simulation::settle`], at the
    /// current instant.
    pub fn inject(&mut self, to: usize, frame: Vec<u8>) {
        self.link.inject(self.now, to, frame);
    }

    /// Runs the network on its own until `watch` says stop, or until virtual time would
    /// pass `limit`; for a workload of its own (a test's socket calls at chosen moments).
    ///
    /// At each instant something happens — a packet arrives, an engine's timer comes due —
    /// every engine settles, then `watch` looks at the nodes; it may make socket calls (they
    /// are settled at once, at the same instant) and returns true to stop there. Returns
    /// the instant it stopped at; None if it ran out of events or reached `limit` first,
    /// with the clock then at `limit`. What is due exactly at `limit` is done. `watch`
    /// also runs once at the start, at the current instant.
    pub fn run_until(
        &mut self,
        limit: Instant,
        mut watch: impl FnMut(Instant, &mut [Node]) -> bool,
    ) -> Option<Instant> {
        loop {
            self.settle(|_, _| false);
            if watch(self.now, &mut self.nodes) {
                self.settle(|_, _| false);
                return Some(self.now);
            }
            self.settle(|_, _| false);
            // Whatever was due now was done (or given up on after settle's bound): time
            // moves on by at least a microsecond.
            let next = self.next_event().map(|at| at.max(self.now + smoltcp::time::Duration::from_micros(1)));
            match next {
                Some(at) if at <= limit => self.advance_to(at),
                _ => {
                    self.advance_to(limit);
                    return None;
                }
            }
        }
    }

    /// Lets virtual time pass up to `at`, everything due by then done: [`Simulation::run_until`]
    /// with nothing to watch.
    pub fn run_to(&mut self, at: Instant) {
        self.run_until(at, |_, _| false);
    }
}

/// Milliseconds as a smoltcp duration.
pub fn millis(ms: u64) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_millis(ms)
}

/// A virtual instant as time since the Unix epoch, for pcap records and trace lines:
/// a simulation starts at the epoch.
pub fn since_epoch(at: Instant) -> Duration {
    Duration::from_micros(at.total_micros().max(0) as u64)
}

/// The address of node `index` in the simulated network 10.0.0.0/24: 10.0.0.(index + 1).
pub fn node_addr(index: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, index as u8 + 1], port))
}
