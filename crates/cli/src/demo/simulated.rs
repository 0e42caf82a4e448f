//! The demo without root (or with `--sim`): the client is a second ustack stack, and the
//! two are engines in a [`Simulation`] — one process, a simulated link, a virtual clock.
//!
//! The tour's calls are made as an event loop makes them, non-blocking: a call that says
//! "not yet" (EAGAIN, EINPROGRESS) is tried again after the clock has moved on to the next
//! event, and gives up after a timeout of virtual time ([`TCP_TIMEOUT`], [`UDP_TIMEOUT`]),
//! as a blocking socket with a timeout would. While the clock runs, what the stacks did is printed as it happens, read
//! from the engines: each connection's state changes ([`Engine::connections`]), the demux's
//! decisions ([`Engine::demux_events`]), and with --trace the packets on the link.
//! Every random choice comes from the seed, so a run prints the same bytes every time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use smoltcp::time::Instant;
use ustack::Cidr;
use ustack::device::PcapWriter;
use ustack::engine::{ConnectionInfo, Decision, Engine, SockId, TcpTuple};
use ustack::packet::{TcpdumpFormatter, TimeFormat, decode};
use ustack::sim::{Fate, LinkConfig, Simulation, since_epoch};
use ustack::{Domain, Errno, StackConfig, Type};

use super::tour::{self, Client, ClientKind, Conn, Datagrams, Server, Sock};
use super::{CLIENT_IP, FLAGS, SERVER_IP, explain};
use crate::args::{PcapFile, TapArgs};
use crate::{Failure, context};

/// The seed when --seed is not given: a fixed one, so that every run is the same.
pub const DEFAULT_SEED: u64 = 1;
/// A blocking TCP call gives up after this much virtual time. Far more than over a TUN:
/// waiting costs nothing here, and on a lossy link TCP may need several retransmissions,
/// each waiting twice as long as the one before, up to a minute (smoltcp's longest RTO).
const TCP_TIMEOUT: Duration = Duration::from_secs(600);
/// A blocking UDP call gives up after this long, as over a TUN: a datagram lost is never
/// sent again, so waiting longer would not help.
const UDP_TIMEOUT: Duration = super::TIMEOUT;
/// At the end of a step, what is due within this long still happens (an ACK in flight, a
/// delayed ACK), so that each step's packets are shown under it.
const PAUSE: Duration = Duration::from_millis(50);
/// How long each packet takes to cross the link.
const DELAY: Duration = Duration::from_millis(1);
const MTU: usize = 1500;

/// The nodes of the simulation.
const CLIENT: usize = 0;
const SERVER: usize = 1;

/// The two stacks on their link.
pub struct World {
    net: Rc<RefCell<Net>>,
    seed: u64,
}

/// The simulation, and what of it has been printed.
struct Net {
    sim: Simulation,
    trace: bool,
    formatter: TcpdumpFormatter,
    pcap: Option<PcapWriter<PcapFile>>,
    /// The first error writing --pcap; recording stops there.
    pcap_error: Option<io::Error>,
    /// Per node, what has been printed.
    seen: [Seen; 2],
}

#[derive(Default)]
struct Seen {
    /// Demux decisions ([`ustack::engine::DemuxCounters::decisions`]).
    decisions: u64,
    /// Timeline entries of each connection, by its 5-tuple and when it started.
    states: HashMap<(TcpTuple, u64), usize>,
}

impl World {
    /// The client at 10.7.0.1 and the server at 10.7.0.2 on a link that loses and damages
    /// packets as --drop-chance and --corrupt-chance say; packets recorded to `pcap`.
    pub fn new(taps: &TapArgs, pcap: Option<PcapFile>) -> Result<World, Failure> {
        let seed = taps.seed.unwrap_or(DEFAULT_SEED);
        let stack = |ip| StackConfig {
            addrs: vec![Cidr::new(ip, 24).expect("24 bits fit an IPv4 address")],
            ..StackConfig::default()
        };
        let link = LinkConfig {
            drop_chance: taps.drop_chance / 100.0,
            corrupt_chance: taps.corrupt_chance / 100.0,
            delay: DELAY,
        };
        let mut sim =
            Simulation::new(seed, vec![("client", stack(CLIENT_IP)), ("server", stack(SERVER_IP))], link, MTU)
                .map_err(context("starting the simulation"))?;
        sim.keep_crossings(true);
        let pcap = match pcap {
            Some(file) => Some(PcapWriter::new(file).map_err(context("writing the --pcap file"))?),
            None => None,
        };
        let net = Net {
            sim,
            trace: taps.trace,
            formatter: TcpdumpFormatter::new().time_format(TimeFormat::Epoch),
            pcap,
            pcap_error: None,
            seen: Default::default(),
        };
        Ok(World { net: Rc::new(RefCell::new(net)), seed })
    }

    pub fn introduce(&self, why: &str, taps: &TapArgs) {
        say!("Mode: two ustack stacks in the simulator, on a virtual clock.");
        explain(&format!("Why: {why}."));
        explain(&format!(
            "So instead of the Linux kernel, a second ustack stack plays the client. Both run in \
             this process as engines (protocol state with no thread or clock of their own), \
             joined by a simulated link that carries the same IP packets a TUN would, {} ms each \
             way. Time is virtual: the clock jumps from one event to the next, so waiting costs \
             nothing. (As root, the demo uses a TUN and the real kernel.)",
            DELAY.as_millis()
        ));
        explain(&format!(
            "server = ustack at {SERVER_IP}; client = ustack at {CLIENT_IP}; both driven through \
             non-blocking socket calls, as an event loop makes them: connect() says EINPROGRESS, \
             recv() EAGAIN, and the clock runs until the call can finish."
        ));
        let link = if taps.drop_chance == 0.0 && taps.corrupt_chance == 0.0 {
            "nothing lost or damaged (--drop-chance, --corrupt-chance)".to_string()
        } else {
            format!("{}% of the packets lost, {}% damaged", taps.drop_chance, taps.corrupt_chance)
        };
        explain(&format!(
            "Seed: {} (ISNs, ports and losses; the same seed prints the same bytes, --seed N \
             another run). Link: {link}.",
            self.seed
        ));
        explain(
            "Lines marked · are what the stacks did, read from them, with the stack's name and \
             the virtual time in seconds. `state:` a connection's RFC 9293 state changes, as \
             `tcp LOCAL <-> REMOTE` from that stack's side. `demux:` where the stack's demux sent \
             an arriving packet that opens or refuses a connection, or is a datagram.",
        );
        if taps.trace {
            explain(&format!(
                "With --trace, every packet on the link too, as tcpdump -nn prints them, after \
                 the name of the stack that sent it ({FLAGS}); and every demux decision, those \
                 for a connection's own segments included."
            ));
        }
    }

    /// After the tour, whose sockets are closed: runs the clock until the stacks have let
    /// go of every connection (TIME-WAIT ends), and says how much virtual time passed.
    pub fn finish(&self) -> Result<Duration, Failure> {
        let mut net = self.net.borrow_mut();
        let deadline = net.sim.now() + TCP_TIMEOUT.into();
        net.run_until(deadline, |sim| sim.nodes.iter().all(|n| n.engine.connection_count() == 0));
        if let Some(e) = net.pcap_error.take() {
            return Err(Failure::new(format!("--pcap: {e}")));
        }
        Ok(since_epoch(net.sim.now()))
    }
}

impl tour::World for World {
    fn server(&self) -> &dyn Server {
        self
    }

    fn client(&self) -> &dyn Client {
        self
    }

    fn elapsed(&self) -> Duration {
        since_epoch(self.net.borrow().sim.now())
    }

    fn end_of_step(&self) {
        let mut net = self.net.borrow_mut();
        let pause = net.sim.now() + PAUSE.into();
        net.run_until(pause, |_| false);
    }
}

impl World {
    /// socket(AF_INET, `ty`) on stack `node`.
    fn open(&self, node: usize, ty: Type) -> SimSocket {
        let id = self.net.borrow_mut().engine(node).socket(Domain::Inet, ty);
        SimSocket { net: self.net.clone(), node, id }
    }
}

impl Server for World {
    fn socket(&self, ty: Type) -> io::Result<Box<dyn Sock>> {
        Ok(Box::new(self.open(SERVER, ty)))
    }
}

impl Client for World {
    fn kind(&self) -> ClientKind {
        ClientKind::Ustack
    }

    fn connect(&self, to: SocketAddr) -> (io::Result<Box<dyn Conn>>, Duration) {
        let socket = self.open(CLIENT, Type::Stream);
        let started = tour::World::elapsed(self);
        let result = socket.connect(to);
        let took = tour::World::elapsed(self) - started;
        (result.map(|()| Box::new(socket) as Box<dyn Conn>), took)
    }

    fn udp(&self) -> io::Result<Box<dyn Datagrams>> {
        Ok(Box::new(self.open(CLIENT, Type::Dgram)))
    }
}

impl Net {
    fn engine(&mut self, node: usize) -> &mut Engine {
        &mut self.sim.nodes[node].engine
    }

    /// A blocking call: `call`, non-blocking, until it stops saying "not yet", the clock
    /// running meanwhile; `timeout` once `limit` has passed with no answer.
    fn block<T>(
        &mut self,
        node: usize,
        (limit, timeout): (Duration, Errno),
        mut call: impl FnMut(&mut Engine, Instant) -> Result<T, Errno>,
    ) -> io::Result<T> {
        let not_yet = |r: &Result<T, Errno>| matches!(r, Err(Errno::EAGAIN | Errno::EINPROGRESS | Errno::EALREADY));
        let now = self.sim.now();
        let first = call(self.engine(node), now);
        if !not_yet(&first) {
            return Ok(first?);
        }
        let deadline = now + limit.into();
        let mut answer = None;
        self.run_until(deadline, |sim| {
            let now = sim.now();
            let r = call(&mut sim.nodes[node].engine, now);
            let done = !not_yet(&r);
            answer = done.then_some(r);
            done
        });
        match answer {
            Some(r) => Ok(r?),
            None => {
                // Nothing more happened in time: the call's timeout passes.
                self.sim.advance_to(deadline);
                self.settle();
                Err(timeout.into())
            }
        }
    }

    /// Runs the network until `done` says so, `deadline` passes, or nothing more will
    /// happen; whether `done` said so. What the stacks do is printed as they do it.
    fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&mut Simulation) -> bool) -> bool {
        loop {
            self.settle();
            if done(&mut self.sim) {
                return true;
            }
            match self.sim.next_event() {
                // Whatever was due now was done: time moves on by at least a microsecond.
                Some(at) if at <= deadline => {
                    let next = self.sim.now() + smoltcp::time::Duration::from_micros(1);
                    self.sim.advance_to(at.max(next));
                }
                _ => return false,
            }
        }
    }

    /// Lets both stacks do everything due at this instant, and prints what they did.
    fn settle(&mut self) {
        self.sim.settle(|_, _| false);
        for node in [CLIENT, SERVER] {
            self.show_decisions(node);
            self.show_states(node);
        }
        for crossing in self.sim.take_crossings() {
            if let Some(writer) = &mut self.pcap
                && self.pcap_error.is_none()
                && let Err(e) = writer.write(since_epoch(crossing.at), &crossing.packet)
            {
                self.pcap_error = Some(e);
            }
            if self.trace {
                let line = self.formatter.format(since_epoch(crossing.at), &decode(&crossing.packet));
                let fate = match crossing.fate {
                    Fate::Delivered => "",
                    Fate::Dropped => "  [lost]",
                    Fate::Corrupted => "  [damaged]",
                    Fate::NoRoute => "  [no route]",
                };
                inside(format_args!("{:<6} {line}{fate}", self.sim.nodes[crossing.from].name));
            }
        }
    }

    /// The demux decisions `node` made since the last look: those that open, refuse or
    /// are not about a connection, or every one with --trace.
    fn show_decisions(&mut self, node: usize) {
        let (name, engine) = (self.sim.nodes[node].name, &self.sim.nodes[node].engine);
        let total = engine.demux_counters().decisions();
        let new = usize::try_from(total - self.seen[node].decisions).unwrap_or(usize::MAX);
        self.seen[node].decisions = total;
        let recent: Vec<_> = engine.demux_events().collect();
        let at = time(self.sim.now());
        for event in &recent[recent.len().saturating_sub(new)..] {
            if self.trace || !matches!(event.decision, Decision::Connection { .. }) {
                inside(format_args!("{name:<6} {at} demux: {event}"));
            }
        }
    }

    /// The state changes of `node`'s connections since the last look, one line per
    /// connection: `tcp LOCAL <-> REMOTE: SYN-SENT -> ESTABLISHED`.
    fn show_states(&mut self, node: usize) {
        let name = self.sim.nodes[node].name;
        for info in self.sim.nodes[node].engine.connections() {
            let key = (info.tuple, info.started_ms.to_bits());
            let shown = self.seen[node].states.get(&key).copied().unwrap_or(0);
            if info.timeline.len() <= shown {
                continue;
            }
            self.seen[node].states.insert(key, info.timeline.len());
            inside(format_args!("{name:<6} {}", state_line(&info, shown)));
        }
    }
}

/// `0.002000 state: tcp 10.7.0.1:49152 <-> 10.7.0.2:7: SYN-SENT -> ESTABLISHED (handshake
/// RTT 2.000 ms)`: the states of `info` from the last one shown (of `shown`) on.
fn state_line(info: &ConnectionInfo, shown: usize) -> String {
    let new = &info.timeline[shown.saturating_sub(1)..];
    let states: Vec<&str> = new.iter().map(|(_, state)| state.as_str()).collect();
    let last_ms = new.last().map_or(0.0, |(ms, _)| *ms);
    let at = time(Instant::from_micros(((info.started_ms + last_ms) * 1000.0).round() as i64));
    let mut line = format!("{at} state: {}: {}", info.tuple, states.join(" -> "));
    let established = new.iter().skip(usize::from(shown > 0)).any(|(_, state)| state == "ESTABLISHED");
    if let (true, Some(rtt)) = (established, info.handshake_rtt_ms) {
        line.push_str(&format!(" (handshake RTT {rtt:.3} ms)"));
    }
    line
}

/// A virtual instant as the packets' times are printed: seconds since the start, to the
/// microsecond.
fn time(at: Instant) -> String {
    let d = since_epoch(at);
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

/// A line of what the stacks did, among the narration, where the TUN mode's logs go.
fn inside(what: impl std::fmt::Display) {
    say!("           · {what}");
}

/// A socket of one of the stacks. Dropping it is close(): the stack finishes what the
/// connection still has to do (a FIN, TIME-WAIT) on its own.
struct SimSocket {
    net: Rc<RefCell<Net>>,
    node: usize,
    id: SockId,
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        if let Ok(mut net) = self.net.try_borrow_mut() {
            net.engine(self.node).close(self.id);
        }
    }
}

impl SimSocket {
    /// A blocking call on this socket (see [`Net::block`]).
    fn block<T>(
        &self,
        timeout: (Duration, Errno),
        mut call: impl FnMut(&mut Engine, SockId) -> Result<T, Errno>,
    ) -> io::Result<T> {
        let id = self.id;
        self.net.borrow_mut().block(self.node, timeout, |engine, _| call(engine, id))
    }

    fn engine<T>(&self, f: impl FnOnce(&mut Engine, SockId) -> T) -> T {
        f(self.net.borrow_mut().engine(self.node), self.id)
    }

    fn tcp_state(&self) -> String {
        self.engine(|e, id| e.tcp_state(id)).map_or_else(|| "CLOSED".into(), |s| s.to_string())
    }
}

impl Sock for SimSocket {
    fn id(&self) -> SockId {
        self.id
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<()> {
        Ok(self.engine(|e, id| e.bind(id, addr))?)
    }

    fn listen(&self, backlog: u32) -> io::Result<()> {
        Ok(self.engine(|e, id| e.listen(id, backlog))?)
    }

    fn accept(&self) -> io::Result<(Box<dyn Sock>, SocketAddr)> {
        let (id, peer) = self.block((TCP_TIMEOUT, Errno::EAGAIN), |e, id| e.accept(id))?;
        Ok((Box::new(SimSocket { net: self.net.clone(), node: self.node, id }), peer))
    }

    fn connect(&self, to: SocketAddr) -> io::Result<()> {
        let mut net = self.net.borrow_mut();
        // EINPROGRESS at first, EALREADY while the handshake goes on, then how it ended.
        let outcome = net.block(self.node, (TCP_TIMEOUT, Errno::ETIMEDOUT), |e, now| e.connect(now, self.id, to));
        if outcome.as_ref().is_err_and(|e| Errno::from_io(e) == Some(Errno::ETIMEDOUT)) {
            // Timed out in SYN-SENT: the handshake is given up, as a blocking connect()'s is.
            let _ = net.engine(self.node).abandon_connect(self.id);
        }
        outcome
    }
}

impl Conn for SimSocket {
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.block((TCP_TIMEOUT, Errno::EAGAIN), |e, id| e.send(id, data, false))
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.block((TCP_TIMEOUT, Errno::EAGAIN), |e, id| e.recv(id, buf))
    }

    fn shutdown_write(&self) -> io::Result<()> {
        Ok(self.engine(|e, id| e.shutdown(id, std::net::Shutdown::Write))?)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.engine(|e, id| e.local_addr(id))?)
    }

    fn state(&self) -> String {
        self.tcp_state()
    }

    fn state_when(&self, want: &str) -> String {
        let mut net = self.net.borrow_mut();
        let deadline = net.sim.now() + TCP_TIMEOUT.into();
        let (node, id) = (self.node, self.id);
        let state = |sim: &mut Simulation| {
            sim.nodes[node].engine.tcp_state(id).map_or_else(|| "CLOSED".to_string(), |s| s.to_string())
        };
        net.run_until(deadline, |sim| state(sim) == want);
        state(&mut net.sim)
    }
}

impl Datagrams for SimSocket {
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.block((UDP_TIMEOUT, Errno::EAGAIN), |e, id| e.send_to(id, data, to))
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.block((UDP_TIMEOUT, Errno::EAGAIN), |e, id| e.recv_from(id, buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(timeline: &[(f64, &str)]) -> ConnectionInfo {
        let tuple = TcpTuple { local: "10.7.0.1:49152".parse().unwrap(), remote: "10.7.0.2:7".parse().unwrap() };
        ConnectionInfo {
            tuple,
            started_ms: 18.0,
            timeline: timeline.iter().map(|&(ms, s)| (ms, s.to_string())).collect(),
            handshake_rtt_ms: Some(2.0),
            closed_first: None,
            resent_segments: 0,
            resent_bytes: 0,
        }
    }

    #[test]
    fn state_lines_go_on_from_the_last_state_shown() {
        let c = info(&[(0.0, "SYN-SENT")]);
        assert_eq!(state_line(&c, 0), "0.018000 state: tcp 10.7.0.1:49152 <-> 10.7.0.2:7: SYN-SENT");
        let c = info(&[(0.0, "SYN-SENT"), (2.0, "ESTABLISHED"), (10_005.5, "FIN-WAIT-1")]);
        assert_eq!(
            state_line(&c, 1),
            "10.023500 state: tcp 10.7.0.1:49152 <-> 10.7.0.2:7: SYN-SENT -> ESTABLISHED -> FIN-WAIT-1 \
             (handshake RTT 2.000 ms)"
        );
        // ESTABLISHED shown before: its RTT is not repeated.
        assert_eq!(state_line(&c, 2), "10.023500 state: tcp 10.7.0.1:49152 <-> 10.7.0.2:7: ESTABLISHED -> FIN-WAIT-1");
    }
}
