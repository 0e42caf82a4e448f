//! Connection setup: sequential connect + close (rate and connect() latency), a burst of
//! clients all connecting at once to a small backlog, and opening many connections for
//! the scale scenario.

use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::os::fd::AsFd;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::os;
use super::peer::{self, IO_TIMEOUT, Listener, Stream};
use super::stats::{micros, percentile};
use ustack::sys::NetNs;

/// What sequential connects measured.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Connections opened and closed.
    pub connections: usize,
    /// Connections opened and closed per second.
    pub per_sec: f64,
    /// connect() latency, microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Opens and closes connections from a kernel client in `client_ns` to `listener` at
/// `addr`, one after the other, for `duration` or `max` connections, whichever ends
/// first. The server accepts each, reads to its end, and closes it.
pub fn rate(
    listener: &dyn Listener,
    client_ns: &NetNs,
    addr: SocketAddrV4,
    duration: Duration,
    max: usize,
) -> io::Result<Rate> {
    let serve = |stop: &AtomicBool| -> io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if let Some((mut stream, _)) = listener.accept()? {
                // The client closes right after connecting: its FIN is usually there
                // already, so this read returns 0 at once.
                let mut buf = [0u8; 64];
                while stream.read(&mut buf)? > 0 {}
            }
        }
        Ok(())
    };
    rate_against(serve, client_ns, addr, duration, max)
}

/// [`rate`]'s client against any server: `serve` runs on a thread of its own and serves
/// the connections to `addr` as [`rate`]'s does, until `stop` is set (the client is done);
/// it should look at `stop` at least every [`peer::STOP_CHECK`].
pub fn rate_against(
    serve: impl FnOnce(&AtomicBool) -> io::Result<()> + Send,
    client_ns: &NetNs,
    addr: SocketAddrV4,
    duration: Duration,
    max: usize,
) -> io::Result<Rate> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let server = scope.spawn(|| serve(&stop));
        let client = client_ns.run(|| -> io::Result<(usize, Duration, Vec<f64>)> {
            let mut latencies = Vec::with_capacity(max.min(1 << 20));
            let start = Instant::now();
            while latencies.len() < max && start.elapsed() < duration {
                let t = Instant::now();
                let stream = TcpStream::connect_timeout(&addr.into(), IO_TIMEOUT)?;
                latencies.push(micros(t.elapsed()));
                drop(stream);
            }
            Ok((latencies.len(), start.elapsed(), latencies))
        });
        stop.store(true, Ordering::Relaxed);
        let served = peer::join_scoped(server);
        let (count, elapsed, mut latencies) = client.and_then(|r| r)?;
        served?;
        Ok(Rate {
            connections: count,
            per_sec: count as f64 / elapsed.as_secs_f64(),
            p50_us: percentile(&mut latencies, 50.0).unwrap_or(f64::NAN),
            p99_us: percentile(&mut latencies, 99.0).unwrap_or(f64::NAN),
        })
    })
}

/// How a set of connects started at once ended.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Connections established, still open, in the order they completed.
    pub connected: Vec<TcpStream>,
    /// connect() failed with ECONNREFUSED or ECONNRESET: the client saw a RST.
    pub reset: usize,
    /// connect() failed otherwise, or had not finished by the deadline.
    pub failed: usize,
    /// The first error other than a RST, for the report.
    pub first_error: Option<String>,
}

/// Connects `n` kernel sockets (in the calling thread's namespace) to `addr`, keeping at
/// most `in_flight` handshakes under way at once, with one thread and poll(2) instead of a
/// thread per socket. Stops waiting at `deadline`. Every socket is set to close
/// abortively (no TIME-WAIT left behind). With `request`, each client sends one byte as
/// soon as it is connected, as a client with a request to make would.
pub fn connect_many(
    addr: SocketAddrV4,
    n: usize,
    in_flight: usize,
    deadline: Instant,
    request: bool,
) -> io::Result<Outcomes> {
    let mut out = Outcomes::default();
    let mut pending: Vec<TcpStream> = Vec::new();
    let mut started = 0;
    while started < n || !pending.is_empty() {
        while started < n && pending.len() < in_flight {
            started += 1;
            match os::start_connect(addr) {
                Ok(stream) => {
                    os::set_abortive_close(&stream)?;
                    pending.push(stream);
                }
                Err(e) => note_failure(&mut out, &e),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            out.failed += pending.len() + (n - started);
            out.first_error.get_or_insert_with(|| "connect() not finished by the deadline".into());
            return Ok(out);
        }
        let timeout = PollTimeout::try_from(left.as_millis().clamp(1, 1000) as i32).unwrap_or(PollTimeout::MAX);
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = pending.iter().map(|s| PollFd::new(s.as_fd(), PollFlags::POLLOUT)).collect();
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.iter().map(|fd| fd.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        let mut still = Vec::with_capacity(pending.len());
        for (stream, ready) in pending.into_iter().zip(ready) {
            if !ready {
                still.push(stream);
                continue;
            }
            match stream.take_error()? {
                None => {
                    stream.set_nonblocking(false)?;
                    if request {
                        // One byte always fits an empty send buffer: this never blocks.
                        (&stream).write_all(b"?")?;
                    }
                    out.connected.push(stream);
                }
                Some(e) => note_failure(&mut out, &e),
            }
        }
        pending = still;
    }
    Ok(out)
}

fn note_failure(out: &mut Outcomes, e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => out.reset += 1,
        _ => {
            out.failed += 1;
            out.first_error.get_or_insert_with(|| e.to_string());
        }
    }
}

/// What a burst of connects measured.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    /// Connections the server accepted by the deadline.
    pub accepted: usize,
    /// Clients whose connect() succeeded: more than were accepted when a handshake's last
    /// ACK was dropped and the client, thinking itself connected, has nothing to resend.
    pub connected: usize,
    /// Clients whose connect() met a RST.
    pub reset: usize,
    /// From the first connect() to the last accept(), if every client was accepted.
    pub all_accepted: Option<Duration>,
}

/// The connections a burst's server accepted, and when it accepted the last.
type Accepted = (Vec<Box<dyn Stream>>, Option<Instant>);

/// `clients` kernel clients in `client_ns` connect to `listener` at `addr` all at once,
/// each sending a one-byte request once connected; the server accepts as fast as it can.
/// Waits until all are accepted or `limit` passes.
///
/// The request matters: a client whose handshake-completing ACK was dropped (the accept
/// queue was full) believes it is connected. If the server kept state, it resends its
/// SYN-ACK; after a SYN cookie it keeps none, and only the client's next segment — its
/// request, retransmitted until acknowledged — can complete the connection.
pub fn burst(
    listener: &dyn Listener,
    client_ns: &NetNs,
    addr: SocketAddrV4,
    clients: usize,
    limit: Duration,
) -> io::Result<Burst> {
    let deadline = Instant::now() + limit;
    let accepted = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    // The clients start once the acceptor runs, as they would against a server waiting in
    // accept(). Started together, the clients' SYNs could fill the accept queue before
    // the acceptor's thread had run at all (in 15 of 48 ustack bursts, each of which then
    // waited for the clients' 1 s SYN retransmission: BENCHMARKS.md §36).
    let acceptor_running = Barrier::new(2);
    std::thread::scope(|scope| {
        let acceptor = scope.spawn(|| -> io::Result<Accepted> {
            acceptor_running.wait();
            // Accepted connections stay open until the end, so nothing frees room in a
            // way the clients did not cause.
            let mut streams = Vec::with_capacity(clients);
            let mut last = None;
            while streams.len() < clients && Instant::now() < deadline && !done.load(Ordering::Relaxed) {
                if let Some((stream, _)) = listener.accept()? {
                    streams.push(stream);
                    last = Some(Instant::now());
                    accepted.store(streams.len(), Ordering::Relaxed);
                }
            }
            Ok((streams, last))
        });
        acceptor_running.wait();
        let client = client_ns.run(|| -> io::Result<(Outcomes, Instant)> {
            let first_connect = Instant::now();
            let outcomes = connect_many(addr, clients, clients, deadline, true)?;
            // Clients hold their connections until the server has taken what it will.
            while accepted.load(Ordering::Relaxed) < outcomes.connected.len() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok((outcomes, first_connect))
        });
        done.store(true, Ordering::Relaxed);
        let server = peer::join_scoped(acceptor);
        let (outcomes, first_connect) = client.and_then(|r| r)?;
        let (streams, last) = server?;
        let all = streams.len() == clients;
        let burst = Burst {
            accepted: streams.len(),
            connected: outcomes.connected.len(),
            reset: outcomes.reset,
            all_accepted: if all { last.map(|t| t.saturating_duration_since(first_connect)) } else { None },
        };
        drop(streams);
        drop(outcomes);
        wait_until_closed(client_ns)?;
        Ok(burst)
    })
}

/// How long [`burst`] waits for its connections to finish closing.
const CLOSING_LIMIT: Duration = Duration::from_secs(5);

/// How long [`burst`] waits after they have.
const SETTLE: Duration = Duration::from_millis(100);

/// Waits until the kernel clients in `client_ns` have no connection left that is open or
/// closing (TIME_WAIT aside), or [`CLOSING_LIMIT`] passes; then [`SETTLE`] more. The next
/// burst then starts on a quiet machine. Back to back, 6 of 32 ustack bursts waited for
/// the clients' 1 s SYN retransmission after an accept queue overflow, against 1 of 48
/// with the pause (BENCHMARKS.md §36). Waiting for the closes alone was not enough:
/// ustack's side has nothing left open within a millisecond, and what the pause lets
/// finish (the kernel's deferred work for a thousand closed sockets is a guess) was not
/// established.
fn wait_until_closed(client_ns: &NetNs) -> io::Result<()> {
    let deadline = Instant::now() + CLOSING_LIMIT;
    while os::tcp_sockets_not_done(client_ns)? > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(SETTLE);
    Ok(())
}
