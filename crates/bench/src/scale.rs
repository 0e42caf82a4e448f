//! Scale: many established connections at once — what each costs in memory, and what
//! they cost the echo latency of a few active ones while the rest sit idle.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::connect::connect_many;
use super::os;
use super::peer::{self, Listener, Stream};
use super::stats::{micros, percentile};
use ustack::sys::NetNs;
use ustack_testkit::servers::{self, App, Ending};

/// Connections that echo while the rest stay idle; the pings go round them in turn.
const ACTIVE: usize = 16;

/// Handshakes under way at once while opening the connections: well below the listener's
/// backlog, so none is dropped and the figure is about holding connections, not a burst.
const IN_FLIGHT: usize = 128;

/// Bytes of each echo.
const PING: usize = 64;

/// What the scale scenario measured.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Growth of the measured memory per connection endpoint, in bytes.
    pub memory_per_endpoint: f64,
    /// Growth of this process's allocated heap per connection, in bytes (resident or not).
    pub heap_per_connection: Option<f64>,
    /// Echo round-trip time while all connections are open, microseconds.
    pub echo_p50_us: f64,
    pub echo_p99_us: f64,
}

/// How the server's memory is measured: a reading in bytes, and how many endpoints of
/// each connection it covers (1 for ustack's RSS, which holds only the server side; 2 for
/// the kernel's slab, which holds both).
pub struct Memory {
    pub read: fn() -> io::Result<u64>,
    pub endpoints: usize,
}

/// Opens `n` connections from kernel clients in `client_ns` to `listener` at `addr`,
/// measures memory before and after, then `pings` echo round trips over a few of them.
/// Gives up at `deadline`.
pub fn scale(
    listener: &dyn Listener,
    client_ns: &NetNs,
    addr: SocketAddrV4,
    n: usize,
    pings: usize,
    memory: &Memory,
    deadline: Instant,
) -> io::Result<Scale> {
    os::trim_heap();
    let before = (memory.read)()?;
    let heap_before = os::heap_bytes();
    let (clients, servers) = std::thread::scope(|scope| {
        let acceptor = scope.spawn(|| -> io::Result<Vec<(Box<dyn Stream>, u16)>> {
            let mut accepted = Vec::with_capacity(n);
            while accepted.len() < n && Instant::now() < deadline {
                if let Some(conn) = listener.accept()? {
                    accepted.push(conn);
                }
            }
            Ok(accepted)
        });
        let clients = client_ns.run(|| connect_many(addr, n, IN_FLIGHT, deadline, false)).and_then(|r| r);
        let servers = peer::join_scoped(acceptor);
        (clients, servers)
    });
    let (clients, servers) = (clients?, servers?);
    if clients.connected.len() < n || servers.len() < n {
        let why = clients.first_error.as_deref().unwrap_or("too slow");
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{} of {n} connected, {} accepted, {} reset: {why}",
                clients.connected.len(),
                servers.len(),
                clients.reset
            ),
        ));
    }
    let after = (memory.read)()?;
    let memory_per_endpoint = (after as f64 - before as f64) / (n * memory.endpoints) as f64;
    let heap_per_connection =
        heap_before.zip(os::heap_bytes()).map(|(before, after)| (after as f64 - before as f64) / n as f64);

    // A few connections, spread over the opening order, echo; their server ends are
    // found by the client's port.
    let active: Vec<&std::net::TcpStream> =
        (0..ACTIVE.min(n)).map(|i| &clients.connected[i * n / ACTIVE.min(n)]).collect();
    for stream in &active {
        stream.set_read_timeout(Some(peer::IO_TIMEOUT))?;
        stream.set_write_timeout(Some(peer::IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
    }
    let ports: HashSet<u16> = active.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<io::Result<_>>()?;
    let (echoing, _idle): (Vec<_>, Vec<_>) = servers.into_iter().partition(|(_, port)| ports.contains(port));
    let mut rtts = std::thread::scope(|scope| -> io::Result<Vec<f64>> {
        let echoes: Vec<_> = echoing.into_iter().map(|(stream, _)| scope.spawn(move || echo(stream))).collect();
        let pinged = ping(&active, pings);
        // End of stream stops the echoes, whether the pings went well or not.
        for stream in &active {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        for handle in echoes {
            peer::join_scoped(handle)?;
        }
        pinged
    })?;
    Ok(Scale {
        memory_per_endpoint,
        heap_per_connection,
        echo_p50_us: percentile(&mut rtts, 50.0).unwrap_or(f64::NAN),
        echo_p99_us: percentile(&mut rtts, 99.0).unwrap_or(f64::NAN),
    })
}

/// Echoes until end of stream; a stall of [`peer::IO_TIMEOUT`] fails it.
fn echo(mut stream: Box<dyn Stream>) -> io::Result<()> {
    match servers::serve_stream(App::Echo, &mut stream, &mut ()).ending {
        Ending::Failed(_, e) => Err(e),
        Ending::Closed | Ending::Stopped => Ok(()),
    }
}

/// `pings` round trips, going round `streams`; their times in microseconds.
fn ping(streams: &[&std::net::TcpStream], pings: usize) -> io::Result<Vec<f64>> {
    let request = [0x17u8; PING];
    let mut answer = [0u8; PING];
    let mut rtts = Vec::with_capacity(pings);
    for i in 0..pings {
        let mut stream = streams[i % streams.len()];
        let t = Instant::now();
        stream.write_all(&request)?;
        stream.read_exact(&mut answer)?;
        rtts.push(micros(t.elapsed()));
    }
    Ok(rtts)
}

/// The deadline for opening `n` connections: generous, since how long it takes is part of
/// what is found out, but bounded.
pub fn limit_for(n: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(n as u64 * 10)
}
