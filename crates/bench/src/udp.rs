//! UDP request/response: a kernel client sends a small datagram and waits for the echo,
//! one at a time.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::peer::{self, Datagram};
use super::stats::{micros, percentile};
use ustack::sys::NetNs;
use ustack_testkit::servers::{self, App, Ending, Watch};

/// Bytes of each request and response.
pub const PAYLOAD: usize = 64;

/// How long the client waits for one answer before counting the request lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// What the round trips measured.
#[derive(Debug, Clone, Copy)]
pub struct RoundTrips {
    pub per_sec: f64,
    /// Round-trip time, microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
    /// Requests that got no answer in time.
    pub lost: usize,
}

/// Round trips from a kernel client in `client_ns` to the echo server on `socket` at
/// `addr`, for `duration` or `max` round trips, whichever ends first.
pub fn round_trips(
    socket: &dyn Datagram,
    client_ns: &NetNs,
    addr: SocketAddrV4,
    duration: Duration,
    max: usize,
) -> io::Result<RoundTrips> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let echo = scope.spawn(|| -> io::Result<()> {
            let mut socket = socket;
            match servers::serve_datagrams(App::Echo, &mut socket, &mut UntilStopped(&stop)) {
                Ending::Failed(_, e) => Err(e),
                Ending::Closed | Ending::Stopped => Ok(()),
            }
        });
        let client = client_ns.run(|| -> io::Result<(usize, Duration, Vec<f64>, usize)> {
            let client = UdpSocket::bind("0.0.0.0:0")?;
            client.connect(addr)?;
            client.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            let request = [0x42u8; PAYLOAD];
            let mut answer = [0u8; 2048];
            let mut rtts = Vec::with_capacity(max.min(1 << 20));
            let mut lost = 0;
            let start = Instant::now();
            while rtts.len() + lost < max && start.elapsed() < duration {
                let t = Instant::now();
                client.send(&request)?;
                match client.recv(&mut answer) {
                    Ok(_) => rtts.push(micros(t.elapsed())),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => lost += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok((rtts.len(), start.elapsed(), rtts, lost))
        });
        stop.store(true, Ordering::Relaxed);
        let echoed = peer::join_scoped(echo);
        let (count, elapsed, mut rtts, lost) = client.and_then(|r| r)?;
        echoed?;
        if count == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no UDP answer at all"));
        }
        Ok(RoundTrips {
            per_sec: count as f64 / elapsed.as_secs_f64(),
            p50_us: percentile(&mut rtts, 50.0).unwrap_or(f64::NAN),
            p99_us: percentile(&mut rtts, 99.0).unwrap_or(f64::NAN),
            lost,
        })
    })
}

/// The echo server's watch: it runs until `stop` is set, looking at it each time a
/// recv_from() times out ([`peer::STOP_CHECK`]); any failure ends it.
struct UntilStopped<'a>(&'a AtomicBool);

impl Watch<io::Error> for UntilStopped<'_> {
    fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn waits_through_timeouts(&self) -> bool {
        true
    }
}
