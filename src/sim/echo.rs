//! The echo workload of `ustack sim`: a client stack opens connections to an echo server
//! on a server stack, each sends its share of a seeded pattern, shuts down its sending
//! side and reads the echo to the end, checking every byte. The server listens with a
//! backlog and accepts no faster than one connection per accept delay, so the backlog
//! can be watched filling and draining.
//!
//! Both applications make only non-blocking socket calls on their engines, as an event
//! loop would; the simulation steps them between rounds of the network.

use std::collections::VecDeque;
use std::time::Duration;

use smoltcp::time::Instant;

use super::{Crossing, LinkConfig, LinkCounters, Node, Simulation, node_addr};
use crate::engine::random::Rng;
use crate::engine::{
    Congestion, ConnectionInfo, DemuxCounters, Domain, Engine, LossRecovery, SockId, StackConfig, Type,
};
use crate::errno::Errno;

/// The port the echo server listens on.
pub const ECHO_PORT: u16 = 7;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// The seed of the link's chances and of both engines.
    pub seed: u64,
    /// Bytes sent, over all connections (each gets an equal share).
    pub bytes: usize,
    /// Client connections, made at once.
    pub clients: usize,
    /// The server's listen() backlog.
    pub backlog: u32,
    /// The least time between two accept() calls of the server.
    pub accept_delay: Duration,
    /// The simulated link's loss, damage and delay.
    pub link: LinkConfig,
    /// Both stacks' MTU.
    pub mtu: usize,
    /// Bytes of TCP buffer each way per connection, on both stacks.
    pub tcp_buffer: usize,
    /// The congestion control of both stacks' connections.
    pub congestion: Congestion,
    /// Who resends lost segments, on both stacks.
    pub loss_recovery: LossRecovery,
    /// Virtual time after which the run stops, finished or not.
    pub time_limit: Duration,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            seed: 1,
            bytes: 64 * 1024,
            clients: 1,
            backlog: 128,
            accept_delay: Duration::ZERO,
            link: LinkConfig::default(),
            mtu: 1500,
            tcp_buffer: 64 * 1024,
            congestion: Congestion::default(),
            loss_recovery: LossRecovery::default(),
            time_limit: Duration::from_secs(3600),
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct EchoReport {
    /// The seed it ran with.
    pub seed: u64,
    /// Bytes the clients sent.
    pub bytes_sent: usize,
    /// Bytes they got back.
    pub bytes_echoed: usize,
    /// Every connection got back exactly what it sent.
    pub intact: bool,
    /// Every connection finished (echoed and closed) before the time limit.
    pub finished: bool,
    /// Virtual time the run took.
    pub virtual_time: Duration,
    /// What the link did to the packets.
    pub link: LinkCounters,
    /// Connections that failed, with the error connect() or recv() gave.
    pub failures: Vec<Errno>,
    /// Each stack's connections, handshake and close, by when they started.
    pub client_connections: Vec<ConnectionInfo>,
    /// The server's (see `client_connections`).
    pub server_connections: Vec<ConnectionInfo>,
    /// The client stack's demux decisions, counted.
    pub client_demux: DemuxCounters,
    /// The server stack's.
    pub server_demux: DemuxCounters,
}

#[derive(Debug, PartialEq)]
enum ClientState {
    Connecting,
    Sending,
    /// Everything sent and the sending side shut down; reading the rest of the echo.
    Draining,
    Done,
    Failed(Errno),
}

struct Client {
    id: SockId,
    data: Vec<u8>,
    sent: usize,
    received: usize,
    intact: bool,
    state: ClientState,
}

struct ServerConn {
    id: SockId,
    pending: VecDeque<u8>,
    eof: bool,
}

/// The two applications.
struct Apps {
    clients: Vec<Client>,
    listener: SockId,
    conns: Vec<ServerConn>,
    accept_delay: smoltcp::time::Duration,
    next_accept: Instant,
    buffer: Vec<u8>,
}

/// The nodes: 0 is the client stack, 1 the server stack.
const CLIENT: usize = 0;
const SERVER: usize = 1;

fn stack_config(index: usize, config: &EchoConfig) -> StackConfig {
    let addr = node_addr(index, 0).ip();
    StackConfig {
        addrs: vec![crate::Cidr::new(addr, 24).expect("24 bits fit an IPv4 address")],
        tcp_buffer: config.tcp_buffer,
        congestion: config.congestion,
        loss_recovery: config.loss_recovery,
        ..StackConfig::default()
    }
}

/// Runs the echo workload; `watch` sees every packet that crossed the link, in order, as
/// the run goes.
pub fn run(config: &EchoConfig, mut watch: impl FnMut(&Crossing, &Simulation)) -> Result<EchoReport, String> {
    if config.clients == 0 {
        return Err("at least one client is needed".into());
    }
    let nodes = vec![("client", stack_config(CLIENT, config)), ("server", stack_config(SERVER, config))];
    let mut sim = Simulation::new(config.seed, nodes, config.link, config.mtu)?;
    sim.keep_crossings(true);
    let mut apps = Apps::start(config, &mut sim.nodes)?;
    let limit = Instant::ZERO + smoltcp::time::Duration::from(config.time_limit);
    loop {
        sim.settle(|now, nodes| apps.step(now, nodes));
        for crossing in sim.take_crossings() {
            watch(&crossing, &sim);
        }
        let quiet = sim.nodes.iter().all(|n| n.engine.connection_count() == 0);
        if apps.done() && quiet {
            break;
        }
        let next = match (sim.next_event(), apps.next_wake(sim.now())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            // Whatever was due now was done in `settle` (or given up on after its bound):
            // time moves on by at least a microsecond.
            Some(at) if at <= limit => sim.advance_to(at.max(sim.now() + smoltcp::time::Duration::from_micros(1))),
            _ => break,
        }
    }
    let bytes_echoed = apps.clients.iter().map(|c| c.received).sum();
    let finished = apps.clients.iter().all(|c| c.state == ClientState::Done);
    Ok(EchoReport {
        seed: config.seed,
        bytes_sent: apps.clients.iter().map(|c| c.sent).sum(),
        bytes_echoed,
        intact: finished && apps.clients.iter().all(|c| c.intact && c.received == c.data.len()),
        finished,
        virtual_time: Duration::from_micros(sim.now().total_micros() as u64),
        link: sim.link.counters(),
        failures: apps
            .clients
            .iter()
            .filter_map(|c| match c.state {
                ClientState::Failed(e) => Some(e),
                _ => None,
            })
            .collect(),
        client_connections: sim.nodes[CLIENT].engine.connections(),
        server_connections: sim.nodes[SERVER].engine.connections(),
        client_demux: sim.nodes[CLIENT].engine.demux_counters(),
        server_demux: sim.nodes[SERVER].engine.demux_counters(),
    })
}

impl Apps {
    fn start(config: &EchoConfig, nodes: &mut [Node]) -> Result<Apps, String> {
        let server = &mut nodes[SERVER].engine;
        let listener = server.socket(Domain::Inet, Type::Stream);
        let fail = |what: &str, e: Errno| format!("echo server: {what}: {e}");
        server.bind(listener, node_addr(SERVER, ECHO_PORT)).map_err(|e| fail("bind", e))?;
        server.listen(listener, config.backlog).map_err(|e| fail("listen", e))?;
        let client = &mut nodes[CLIENT].engine;
        let share = config.bytes / config.clients;
        let clients = (0..config.clients)
            .map(|i| {
                let len = if i == 0 { config.bytes - share * (config.clients - 1) } else { share };
                let mut rng = Rng::new(config.seed.wrapping_add(i as u64));
                let data = (0..len).map(|_| rng.next_u32() as u8).collect();
                let id = client.socket(Domain::Inet, Type::Stream);
                let state = match client.connect(Instant::ZERO, id, node_addr(SERVER, ECHO_PORT)) {
                    Err(Errno::EINPROGRESS) => ClientState::Connecting,
                    Err(e) => ClientState::Failed(e),
                    Ok(()) => ClientState::Sending,
                };
                Client { id, data, sent: 0, received: 0, intact: true, state }
            })
            .collect();
        Ok(Apps {
            clients,
            listener,
            conns: Vec::new(),
            accept_delay: config.accept_delay.into(),
            next_accept: Instant::ZERO,
            buffer: vec![0; 64 * 1024],
        })
    }

    fn done(&self) -> bool {
        self.clients.iter().all(|c| matches!(c.state, ClientState::Done | ClientState::Failed(_)))
            && self.conns.is_empty()
    }

    /// When the server may accept again, if it is waiting to.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        (self.next_accept > now).then_some(self.next_accept)
    }

    /// One round of both applications; whether either did anything.
    fn step(&mut self, now: Instant, nodes: &mut [Node]) -> bool {
        let (client, server) = nodes.split_at_mut(SERVER);
        let mut busy = false;
        for c in &mut self.clients {
            busy |= c.step(&mut client[CLIENT].engine, &mut self.buffer);
        }
        busy |= self.serve(now, &mut server[0].engine);
        busy
    }

    fn serve(&mut self, now: Instant, server: &mut Engine) -> bool {
        let mut busy = false;
        while now >= self.next_accept {
            match server.accept(self.listener) {
                Ok((id, _)) => {
                    self.conns.push(ServerConn { id, pending: VecDeque::new(), eof: false });
                    self.next_accept = now + self.accept_delay;
                    busy = true;
                }
                Err(_) => break,
            }
            if self.accept_delay.total_micros() > 0 {
                break;
            }
        }
        for conn in &mut self.conns {
            loop {
                match server.recv(conn.id, &mut self.buffer) {
                    Ok(0) => conn.eof = true,
                    Ok(n) => {
                        conn.pending.extend(&self.buffer[..n]);
                        busy = true;
                    }
                    Err(Errno::EAGAIN) => {}
                    Err(_) => conn.eof = true,
                }
                let (front, _) = conn.pending.as_slices();
                let sent = match server.send(conn.id, front, false) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => 0,
                    Err(_) => {
                        conn.pending.clear();
                        conn.eof = true;
                        0
                    }
                };
                conn.pending.drain(..sent);
                busy |= sent > 0;
                if sent == 0 || conn.eof {
                    break;
                }
            }
        }
        self.conns.retain(|conn| {
            let finished = conn.eof && conn.pending.is_empty();
            if finished {
                server.close(conn.id);
            }
            !finished
        });
        busy
    }
}

impl Client {
    /// One round of this connection; whether it did anything.
    fn step(&mut self, engine: &mut Engine, buffer: &mut [u8]) -> bool {
        let mut busy = false;
        if self.state == ClientState::Connecting {
            match engine.connect_outcome(self.id) {
                Ok(()) => self.state = ClientState::Sending,
                Err(Errno::EINPROGRESS) => return false,
                Err(e) => {
                    self.state = ClientState::Failed(e);
                    engine.close(self.id);
                    return true;
                }
            }
            busy = true;
        }
        if self.state == ClientState::Sending {
            while self.sent < self.data.len() {
                match engine.send(self.id, &self.data[self.sent..], false) {
                    Ok(n) => {
                        self.sent += n;
                        busy = true;
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(e) => return self.fail(engine, e),
                }
            }
            if self.sent == self.data.len() {
                if let Err(e) = engine.shutdown(self.id, std::net::Shutdown::Write) {
                    return self.fail(engine, e);
                }
                self.state = ClientState::Draining;
                busy = true;
            }
        }
        if matches!(self.state, ClientState::Sending | ClientState::Draining) {
            loop {
                match engine.recv(self.id, buffer) {
                    Ok(0) => {
                        engine.close(self.id);
                        self.state = if self.received == self.data.len() {
                            ClientState::Done
                        } else {
                            ClientState::Failed(Errno::ECONNRESET)
                        };
                        return true;
                    }
                    Ok(n) => {
                        let expected = self.data.get(self.received..self.received + n);
                        self.intact &= expected == Some(&buffer[..n]);
                        self.received += n;
                        busy = true;
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(e) => return self.fail(engine, e),
                }
            }
        }
        busy
    }

    fn fail(&mut self, engine: &mut Engine, e: Errno) -> bool {
        self.state = ClientState::Failed(e);
        engine.close(self.id);
        true
    }
}
