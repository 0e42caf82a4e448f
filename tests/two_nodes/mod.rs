//! Two engines on the simulator's virtual clock, a client at 10.0.0.1 and a server at
//! 10.0.0.2 on a link that delays each packet by 1 ms, for the tests that make socket calls
//! on them between steps and look at what crossed the link. Included with
//! `mod two_nodes;`, from one place.

#![allow(dead_code)] // each test binary uses its own part

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use smoltcp::time::{Duration, Instant};
use ustack::engine::{Domain, SockId, StackConfig, Type};
use ustack::errno::Errno;
use ustack::sim::{Fate, LinkConfig, Node, Simulation, node_addr};

pub const CLIENT: usize = 0;
pub const SERVER: usize = 1;
pub const PORT: u16 = 80;

/// Node `index`'s configuration: its address 10.0.0.(index + 1)/24, the rest default.
pub fn config(index: usize) -> StackConfig {
    StackConfig { addrs: vec![ustack::Cidr::new(node_addr(index, 0).ip(), 24).unwrap()], ..StackConfig::default() }
}

/// The client and the server on a link that delays each packet by 1 ms and loses none,
/// each configured by `tweak` after [`config`]; what crosses the link is kept.
pub fn network(tweak: impl Fn(&mut StackConfig)) -> Simulation {
    let mut configs = [config(CLIENT), config(SERVER)];
    configs.iter_mut().for_each(&tweak);
    let [client, server] = configs;
    let mut sim = Simulation::new(1, vec![("client", client), ("server", server)], LinkConfig::default(), 1500)
        .expect("a simulation");
    sim.keep_crossings(true);
    sim
}

/// A listener on the server's address and [`PORT`] with `backlog`, in node `node` of the
/// simulation, `setup` applied to it before listen().
pub fn listen_with(
    sim: &mut Simulation,
    node: usize,
    backlog: u32,
    setup: impl FnOnce(&mut ustack::Engine, SockId),
) -> SockId {
    let engine = &mut sim.nodes[node].engine;
    let l = engine.socket(Domain::Inet, Type::Stream);
    setup(engine, l);
    engine.bind(l, node_addr(SERVER, PORT)).unwrap();
    engine.listen(l, backlog).unwrap();
    l
}

/// A non-blocking connect() from the client to the server's [`PORT`], now, `setup`
/// applied to the socket before it.
pub fn connect_with(sim: &mut Simulation, setup: impl FnOnce(&mut ustack::Engine, SockId)) -> SockId {
    let now = sim.now();
    let engine = &mut sim.nodes[CLIENT].engine;
    let c = engine.socket(Domain::Inet, Type::Stream);
    setup(engine, c);
    assert_eq!(engine.connect(now, c, node_addr(SERVER, PORT)), Err(Errno::EINPROGRESS));
    c
}

/// How the client's connect() `c` ended, once it has (None while in progress).
pub fn outcome(nodes: &mut [Node], c: SockId) -> Option<Result<(), Errno>> {
    Some(nodes[CLIENT].engine.connect_outcome(c)).filter(|r| *r != Err(Errno::EINPROGRESS))
}

/// A connection from the client (its socket set up by `setup` before connect()) to
/// listener `l` on the server, made now: (client socket, accepted socket). Takes 3 ms of
/// virtual time.
pub fn establish_with(
    sim: &mut Simulation,
    l: SockId,
    setup: impl FnOnce(&mut ustack::Engine, SockId),
) -> (SockId, SockId) {
    let c = connect_with(sim, setup);
    let mut accepted = None;
    let limit = sim.now() + Duration::from_secs(1);
    sim.run_until(limit, |_, nodes| {
        accepted = accepted.or(nodes[SERVER].engine.accept(l).ok().map(|(s, _)| s));
        accepted.is_some() && outcome(nodes, c) == Some(Ok(()))
    })
    .expect("the handshake completes");
    (c, accepted.unwrap())
}

/// Lets the network run for `d` of virtual time.
pub fn run_for(sim: &mut Simulation, d: Duration) {
    let until = sim.now() + d;
    sim.run_to(until);
}

/// A TCP segment that crossed the link (or was sent to a peer the test plays).
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    pub at: Instant,
    pub from: usize,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub to_port: u16,
    pub seq: u32,
    pub ack_no: u32,
    pub len: usize,
    pub window: u16,
    /// The IPv4 TTL or the IPv6 hop limit.
    pub ttl: u8,
    pub fate: Fate,
}

/// The TCP segments sent since the last call, in order.
pub fn segments(sim: &mut Simulation) -> Vec<Seg> {
    sim.take_crossings()
        .into_iter()
        .filter_map(|c| {
            let packet = SlicedPacket::from_ip(&c.packet).ok()?;
            let ttl = match &packet.net {
                Some(NetSlice::Ipv4(ip)) => ip.header().ttl(),
                Some(NetSlice::Ipv6(ip)) => ip.header().hop_limit(),
                _ => return None,
            };
            let Some(TransportSlice::Tcp(t)) = packet.transport else { return None };
            Some(Seg {
                at: c.at,
                from: c.from,
                syn: t.syn(),
                ack: t.ack(),
                fin: t.fin(),
                rst: t.rst(),
                to_port: t.destination_port(),
                seq: t.sequence_number(),
                ack_no: t.acknowledgment_number(),
                len: t.payload().len(),
                window: t.window_size(),
                ttl,
                fate: c.fate,
            })
        })
        .collect()
}

/// Reordering: the client's `nth` data segment (counting from 1) is taken off the link
/// instead of delivered, into the returned cell, for the test to inject late.
pub fn hold_back_client_data_segment(
    sim: &mut Simulation,
    nth: usize,
) -> std::rc::Rc<std::cell::RefCell<Option<Vec<u8>>>> {
    let held = std::rc::Rc::new(std::cell::RefCell::new(None));
    let stash = held.clone();
    let mut data_segments = 0;
    sim.link.lose_if(move |_, from, p| {
        // Longer than the IP and TCP headers with options: it carries data.
        let data = from == CLIENT && p.len() > 60;
        data_segments += usize::from(data);
        if data && data_segments == nth {
            *stash.borrow_mut() = Some(p.to_vec());
            return true;
        }
        false
    });
    held
}

/// Sends `len` bytes from the client; runs until the server has read them all, calling
/// `watch` at every step. Returns how long that took.
pub fn transfer(
    sim: &mut Simulation,
    (c, s): (SockId, SockId),
    len: usize,
    mut watch: impl FnMut(&mut Simulation),
) -> Duration {
    let start = sim.now();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    let mut got = 0;
    let mut buf = vec![0; 65536];
    loop {
        sim.settle(|_, _| false);
        if sent < len
            && let Ok(n) = sim.nodes[CLIENT].engine.send(c, &data[sent..], false)
        {
            sent += n;
        }
        while let Ok(n @ 1..) = sim.nodes[SERVER].engine.recv(s, &mut buf) {
            assert_eq!(buf[..n], data[got..got + n]);
            got += n;
        }
        watch(sim);
        sim.settle(|_, _| false);
        if got == len {
            break;
        }
        assert!(sim.now() < start + Duration::from_secs(60), "the transfer finishes");
        let soon = sim.now() + Duration::from_micros(1);
        let next = sim.next_event().map_or(soon, |at| at.max(soon)).min(sim.now() + Duration::from_millis(1));
        sim.advance_to(next);
    }
    sim.now() - start
}
