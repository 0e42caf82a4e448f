//! The programs ustack runs in a replay, written on its Berkeley socket API like any
//! program: echo (RFC 862) and discard (RFC 863) servers in the captured server's place,
//! and a client that repeats the captured client's script.
//!
//! Each keeps what it reads ([`Reads`]) for the replayer to compare with what the
//! captured peer sent. The replayer steers them through a [`Gate`]: a client connects when the capture
//! shows the captured client's SYN, and with `hold_accept` the servers accept nothing
//! until the capture shows the captured server's application acting. Every blocking
//! call has a short timeout, so each thread notices [`Gate::stop`] within
//! [`POLL`] and the replay never waits on a program for long.

use std::collections::HashSet;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ustack::socket::{Domain, Type};
use ustack::{Errno, Socket, Stack};
use ustack_testkit::servers::{self, Call, Ending, Watch};

use super::App;
use super::conversation::Proto;
use super::script::{Action, ClientStep};

/// How often a waiting program looks whether the replay has stopped.
pub const POLL: Duration = Duration::from_millis(50);

/// Connections the servers serve at once; more are closed at once (a replay sends no
/// more SYNs than its capture holds, so this only bounds a misbehaving stack).
const MAX_CONNECTIONS: usize = 1024;

/// Listening ports and bound UDP ports the servers open (a thread each).
pub const MAX_PORTS: usize = 256;

/// Clients one replay runs (two threads each).
pub const MAX_CLIENTS: usize = 256;

/// Bytes read at a time.
const BUF: usize = 64 * 1024;

/// Lines the programs' log keeps.
const MAX_LOG: usize = 64;

#[derive(Debug, Default)]
struct GateState {
    accepting: bool,
    started: HashSet<usize>,
    stop: bool,
}

/// What the replayer lets the programs do, and when.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    /// A gate; servers accept at once unless `hold_accept`.
    pub fn new(hold_accept: bool) -> Arc<Gate> {
        let gate = Gate::default();
        gate.lock().accepting = !hold_accept;
        Arc::new(gate)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the servers accept.
    pub fn open_accept(&self) {
        self.lock().accepting = true;
        self.changed.notify_all();
    }

    /// Lets the client of conversation `flow` connect.
    pub fn start(&self, flow: usize) {
        self.lock().started.insert(flow);
        self.changed.notify_all();
    }

    /// Ends every program.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// Whether the replay has stopped.
    pub fn stopped(&self) -> bool {
        self.lock().stop
    }

    /// Waits until `ready` holds; false if the replay stopped first.
    fn wait_for(&self, ready: impl Fn(&GateState) -> bool) -> bool {
        let mut state = self.lock();
        loop {
            if state.stop {
                return false;
            }
            if ready(&state) {
                return true;
            }
            state = self.changed.wait_timeout(state, POLL).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// What the programs did that the report may need: errors, mostly. Bounded.
#[derive(Debug, Default)]
pub struct Log(Mutex<Vec<String>>);

impl Log {
    /// Adds a line (dropped beyond [`MAX_LOG`]).
    pub fn add(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() < MAX_LOG {
            lines.push(line);
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Which conversation a read belongs to: TCP or UDP, ustack's end, the peer's end.
pub type ReadKey = (Proto, SocketAddr, SocketAddr);

/// What ustack's programs read in one conversation.
#[derive(Clone, Debug, Default)]
pub struct Read {
    /// TCP: the bytes read, in order (up to the limit).
    pub bytes: Vec<u8>,
    /// UDP: the datagrams read, in order (up to the limit).
    pub datagrams: Vec<Vec<u8>>,
    /// Bytes or datagrams kept at most: what the peer sent, and one more.
    limit: usize,
    /// More was read than kept.
    pub more: bool,
}

/// What ustack's programs read, per conversation, so the replay can compare it with what
/// the captured peer sent: the byte stream in the other direction. Only conversations
/// the replay expects are kept, each bounded by what the capture holds.
#[derive(Debug, Default)]
pub struct Reads {
    reads: Mutex<std::collections::HashMap<ReadKey, Read>>,
    /// Bytes and datagrams read in all, so a wait can tell progress.
    total: AtomicUsize,
}

impl Reads {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ReadKey, Read>> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps what is read in conversation `key`, up to `limit` bytes or datagrams.
    pub fn expect(&self, key: ReadKey, limit: usize) {
        self.lock().insert(key, Read { limit: limit.saturating_add(1), ..Read::default() });
    }

    fn add(&self, key: &ReadKey, data: &[u8]) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut reads = self.lock();
        let Some(read) = reads.get_mut(key) else { return };
        if key.0 == Proto::Tcp {
            let room = read.limit.saturating_sub(read.bytes.len());
            read.bytes.extend_from_slice(&data[..room.min(data.len())]);
            read.more |= data.len() > room;
        } else if read.datagrams.len() < read.limit {
            read.datagrams.push(data.to_vec());
        } else {
            read.more = true;
        }
    }

    /// Reads so far in all conversations (it only grows).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// How much was read in `key`: bytes (TCP) or datagrams (UDP).
    pub fn count(&self, key: &ReadKey) -> usize {
        self.lock().get(key).map_or(0, |r| if key.0 == Proto::Tcp { r.bytes.len() } else { r.datagrams.len() })
    }

    /// What was read in `key`.
    pub fn get(&self, key: &ReadKey) -> Option<Read> {
        self.lock().get(key).cloned()
    }
}

/// What the replayer and the programs share: the gate, the log, what they read.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    /// When the programs may act.
    pub gate: Arc<Gate>,
    /// What they report.
    pub log: Arc<Log>,
    /// What they read.
    pub reads: Arc<Reads>,
}

/// The running programs.
pub struct Programs {
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The servers' listening sockets (handles shared with the accept threads), to read
    /// their queues.
    pub listeners: Vec<Socket>,
    gate: Arc<Gate>,
}

impl Programs {
    fn new(gate: Arc<Gate>) -> Programs {
        Programs { threads: Arc::default(), listeners: Vec::new(), gate }
    }

    fn spawn(&self, name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), String> {
        spawn_into(&self.threads, name, work)
    }

    /// Whether every listener's accept queue is empty (the servers took every connection
    /// that completed its handshake).
    pub fn accept_queues_empty(&self) -> bool {
        self.listeners.iter().all(|l| l.listen_queues().is_none_or(|(_, accept, _)| accept == 0))
    }

    /// Stops every program and waits for its thread (each notices within [`POLL`]).
    pub fn finish(self) {
        self.gate.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let handles: Vec<JoinHandle<()>> =
                std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                // A thread still running at the deadline is left to end on its own (the
                // stack is about to stop, which ends every blocking call).
                while !handle.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if handle.is_finished() {
                    let _ = handle.join();
                }
            }
            if Instant::now() >= deadline {
                return;
            }
        }
    }
}

fn spawn_into(
    threads: &Arc<Mutex<Vec<JoinHandle<()>>>>,
    name: &str,
    work: impl FnOnce() + Send + 'static,
) -> Result<(), String> {
    let handle = std::thread::Builder::new()
        .name(format!("replay {name}"))
        .spawn(work)
        .map_err(|e| format!("cannot start a thread for {name}: {e}"))?;
    threads.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
    Ok(())
}

fn domain(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() { Domain::Inet } else { Domain::Inet6 }
}

/// A socket whose blocking calls return every [`POLL`], so its thread can look at the gate.
fn socket(stack: &Stack, addr: &SocketAddr, ty: Type) -> Result<Socket, Errno> {
    let s = Socket::new(stack, domain(addr), ty)?;
    s.set_read_timeout(Some(POLL))?;
    s.set_write_timeout(Some(POLL))?;
    Ok(s)
}

/// Starts `app` on TCP listeners at `tcp` (with `backlog`) and UDP sockets at `udp`.
pub fn serve(
    stack: &Stack,
    app: App,
    tcp: &[SocketAddr],
    udp: &[SocketAddr],
    backlog: u32,
    shared: &Shared,
) -> Result<Programs, String> {
    let Shared { gate, log, reads } = shared.clone();
    if tcp.len() + udp.len() > MAX_PORTS {
        return Err(format!(
            "its server uses {} ports, more than the {MAX_PORTS} a replay serves; replay fewer flows (--flow ID)",
            tcp.len() + udp.len()
        ));
    }
    let mut programs = Programs::new(gate.clone());
    for &addr in tcp {
        let listener = socket(stack, &addr, Type::Stream).map_err(|e| format!("socket(): {e}"))?;
        listener.bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        listener.listen(backlog).map_err(|e| format!("listen {addr}: {e}"))?;
        let mine = listener.try_clone().map_err(|e| format!("{addr}: {e}"))?;
        programs.listeners.push(listener);
        let (gate, log, reads, threads) = (gate.clone(), log.clone(), reads.clone(), programs.threads.clone());
        programs.spawn(&format!("{app} {addr}"), move || accept_loop(app, mine, addr, gate, log, reads, threads))?;
    }
    for &addr in udp {
        let s = socket(stack, &addr, Type::Dgram).map_err(|e| format!("socket(): {e}"))?;
        s.bind(addr).map_err(|e| format!("bind udp {addr}: {e}"))?;
        let (gate, log, reads) = (gate.clone(), log.clone(), reads.clone());
        programs.spawn(&format!("{app} udp {addr}"), move || serve_datagrams(app, s, addr, gate, log, reads))?;
    }
    Ok(programs)
}

fn accept_loop(
    app: App,
    listener: Socket,
    addr: SocketAddr,
    gate: Arc<Gate>,
    log: Arc<Log>,
    reads: Arc<Reads>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    // With hold_accept: not a single accept() until the replayer says so.
    if !gate.wait_for(|s| s.accepting) {
        return;
    }
    let active = Arc::new(AtomicUsize::new(0));
    while !gate.stopped() {
        let (conn, peer) = match listener.accept() {
            Ok(got) => got,
            Err(Errno::EAGAIN) => continue,
            Err(e) => {
                if !gate.stopped() {
                    log.add(format!("{app} server {addr}: accept(): {e}"));
                }
                return;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            log.add(format!("{app} server {addr}: more than {MAX_CONNECTIONS} connections; closed {peer}"));
            continue;
        }
        let _ = conn.set_read_timeout(Some(POLL));
        let _ = conn.set_write_timeout(Some(POLL));
        active.fetch_add(1, Ordering::Relaxed);
        let (gate, conn_log, reads, active) = (gate.clone(), log.clone(), reads.clone(), active.clone());
        let mut conn = conn;
        let spawned = spawn_into(&threads, &format!("{app} {peer}"), move || {
            serve_stream(app, &mut conn, (Proto::Tcp, addr, peer), &gate, &conn_log, &reads);
            active.fetch_sub(1, Ordering::Relaxed);
        });
        if let Err(e) = spawned {
            log.add(e);
        }
    }
}

/// send() all of `bytes`, through timeouts, until the replay stops.
fn send_all(conn: &Socket, mut bytes: &[u8], gate: &Gate) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match conn.send(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EAGAIN) if !gate.stopped() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a server reads goes to `reads` under its conversation's key; the gate says
/// when to stop, and until then every timeout is waited through.
struct ServerWatch<'a> {
    app: App,
    /// The server's own address.
    local: SocketAddr,
    /// TCP: the connection's client (UDP learns each datagram's sender as it comes).
    client: Option<SocketAddr>,
    gate: &'a Gate,
    log: &'a Log,
    reads: &'a Reads,
}

impl Watch<Errno> for ServerWatch<'_> {
    fn received(&mut self, data: &[u8]) {
        if let Some(client) = self.client {
            self.reads.add(&(Proto::Tcp, self.local, client), data);
        }
    }

    fn received_from(&mut self, from: SocketAddr, data: &[u8]) {
        self.reads.add(&(Proto::Udp, self.local, from), data);
    }

    fn stopped(&self) -> bool {
        self.gate.stopped()
    }

    fn waits_through_timeouts(&self) -> bool {
        true
    }

    fn reply_failed(&mut self, to: SocketAddr, error: &Errno) -> bool {
        self.log.add(format!("{} server (UDP): sendto({to}): {error}", self.app));
        true
    }
}

/// Echo or discard on one connection until the client's FIN, then our FIN (as
/// `ustack serve` does: the same server).
fn serve_stream(app: App, conn: &mut Socket, key: ReadKey, gate: &Gate, log: &Log, reads: &Reads) {
    let (_, local, peer) = key;
    let watch = &mut ServerWatch { app, local, client: Some(peer), gate, log, reads };
    let end = servers::serve_stream(app, conn, watch);
    match end.ending {
        Ending::Closed | Ending::Stopped => {}
        // As the stack is taken down at the end of a replay, calls fail; that is no news.
        Ending::Failed(call, e) if call == Call::Shutdown || !gate.stopped() => {
            log.add(format!("{app} server, connection from {peer}: {call}: {e}"));
        }
        Ending::Failed(..) => {}
    }
}

fn serve_datagrams(app: App, mut socket: Socket, addr: SocketAddr, gate: Arc<Gate>, log: Arc<Log>, reads: Arc<Reads>) {
    let watch = &mut ServerWatch { app, local: addr, client: None, gate: &gate, log: &log, reads: &reads };
    if let Ending::Failed(call, e) = servers::serve_datagrams(app, &mut socket, watch)
        && !gate.stopped()
    {
        log.add(format!("{app} server (UDP): {call}: {e}"));
    }
}

/// What a client has received so far.
#[derive(Debug, Default)]
struct Received {
    /// Bytes (TCP) or datagrams (UDP).
    count: u64,
    /// The server's FIN arrived, or reading failed.
    eof: bool,
}

/// A client's reading side, shared with its writing side.
#[derive(Debug, Default)]
struct Progress {
    received: Mutex<Received>,
    changed: Condvar,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut Received)) {
        f(&mut self.received.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    /// Waits until `count` reaches `after` (and the FIN came, if `eof`); false when the
    /// replay stopped or reading ended first.
    fn wait(&self, after: u64, eof: bool, gate: &Gate) -> bool {
        let mut r = self.received.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if r.count >= after && (!eof || r.eof) {
                return true;
            }
            // Once reading has ended nothing more will come.
            if gate.stopped() || r.eof {
                return false;
            }
            r = self.changed.wait_timeout(r, POLL).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// The captured client of one conversation, to be repeated by ustack.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    /// The conversation's index, for the gate.
    pub flow: usize,
    /// Its number, for the log.
    pub id: u64,
    /// TCP (true) or UDP.
    pub tcp: bool,
    /// The captured client's address and port: ustack binds it.
    pub local: SocketAddr,
    /// The server's.
    pub remote: SocketAddr,
    /// What to do.
    pub steps: Vec<ClientStep>,
}

/// Starts a client for each spec; each waits for [`Gate::start`] of its conversation.
pub fn clients(
    stack: &Stack,
    specs: Vec<ClientSpec>,
    shared: &Shared,
    connect_timeout: Duration,
) -> Result<Programs, String> {
    let Shared { gate, log, reads } = shared.clone();
    if specs.len() > MAX_CLIENTS {
        return Err(format!(
            "the capture has {} conversations, more than the {MAX_CLIENTS} clients a replay runs; replay fewer (--flow ID)",
            specs.len()
        ));
    }
    let programs = Programs::new(gate.clone());
    for spec in specs {
        let (gate, log, reads) = (gate.clone(), log.clone(), reads.clone());
        let threads = programs.threads.clone();
        // The socket is made now (in this thread), so a failure is reported at once.
        let ty = if spec.tcp { Type::Stream } else { Type::Dgram };
        let sock = socket(stack, &spec.local, ty).map_err(|e| format!("socket(): {e}"))?;
        sock.bind(spec.local).map_err(|e| format!("bind {}: {e}", spec.local))?;
        let name = format!("client of flow {}", spec.id);
        programs.spawn(&name, move || {
            if !gate.wait_for(|s| s.started.contains(&spec.flow)) {
                return;
            }
            if spec.tcp {
                tcp_client(sock, spec, &gate, &log, &reads, &threads, connect_timeout);
            } else {
                udp_client(sock, spec, &gate, &log, &reads, &threads);
            }
        })?;
    }
    Ok(programs)
}

fn tcp_client(
    sock: Socket,
    spec: ClientSpec,
    gate: &Arc<Gate>,
    log: &Arc<Log>,
    reads: &Arc<Reads>,
    threads: &Arc<Mutex<Vec<JoinHandle<()>>>>,
    connect_timeout: Duration,
) {
    let who = format!("client of flow {}", spec.id);
    if let Err(e) = sock.connect_timeout(spec.remote, connect_timeout) {
        log.add(format!("{who}: connect({}): {e}", spec.remote));
        return;
    }
    let progress = Arc::new(Progress::default());
    match sock.try_clone() {
        Ok(reader) => {
            let (progress, gate, reader_log, who) = (progress.clone(), gate.clone(), log.clone(), who.clone());
            let (reads, key) = (reads.clone(), (Proto::Tcp, spec.local, spec.remote));
            let spawned = spawn_into(threads, &format!("{who} reader"), move || {
                let mut buf = vec![0; BUF];
                loop {
                    match reader.recv(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            reads.add(&key, &buf[..n]);
                            progress.update(|r| r.count += n as u64);
                        }
                        Err(Errno::EAGAIN) if !gate.stopped() => {}
                        Err(e) => {
                            if !gate.stopped() {
                                reader_log.add(format!("{who}: recv(): {e}"));
                            }
                            break;
                        }
                    }
                }
                progress.update(|r| r.eof = true);
            });
            if let Err(e) = spawned {
                log.add(e);
                return;
            }
        }
        Err(e) => {
            log.add(format!("{who}: {e}"));
            return;
        }
    }
    for step in &spec.steps {
        if !progress.wait(step.after, step.after_eof, gate) {
            return;
        }
        let result = match &step.action {
            Action::Send(bytes) => send_all(&sock, bytes, gate).map_err(|e| format!("send(): {e}")),
            Action::ShutdownWrite => sock.shutdown(Shutdown::Write).map_err(|e| format!("shutdown(): {e}")),
        };
        if let Err(e) = result {
            if !gate.stopped() {
                log.add(format!("{who}: {e}"));
            }
            return;
        }
    }
    // Keep the connection (and so the reader) until the server's FIN or the end.
    let _ = progress.wait(u64::MAX, true, gate);
}

fn udp_client(
    sock: Socket,
    spec: ClientSpec,
    gate: &Arc<Gate>,
    log: &Arc<Log>,
    reads: &Arc<Reads>,
    threads: &Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let who = format!("client of flow {}", spec.id);
    let progress = Arc::new(Progress::default());
    match sock.try_clone() {
        Ok(reader) => {
            let (progress, gate) = (progress.clone(), gate.clone());
            let (reads, local) = (reads.clone(), spec.local);
            let spawned = spawn_into(threads, &format!("{who} reader"), move || {
                let mut buf = vec![0; BUF];
                while !gate.stopped() {
                    match reader.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            reads.add(&(Proto::Udp, local, from), &buf[..n]);
                            progress.update(|r| r.count += 1);
                        }
                        Err(Errno::EAGAIN) => {}
                        // A connected UDP socket hears of an ICMP error as ECONNREFUSED;
                        // this one is not connected, and any other error ends reading.
                        Err(_) => break,
                    }
                }
            });
            if let Err(e) = spawned {
                log.add(e);
                return;
            }
        }
        Err(e) => {
            log.add(format!("{who}: {e}"));
            return;
        }
    }
    for step in &spec.steps {
        if !progress.wait(step.after, false, gate) {
            return;
        }
        if let Action::Send(bytes) = &step.action
            && let Err(e) = sock.send_to(bytes, spec.remote)
        {
            log.add(format!("{who}: sendto({}): {e}", spec.remote));
            return;
        }
    }
}
