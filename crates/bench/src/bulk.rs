//! Bulk TCP: one connection, one direction, as fast as it goes for a fixed time; the
//! receiver measures. The kernel client side and the server side are shared by every
//! engine (ustack, the kernel, raw smoltcp).

use std::io::{self, Read, Write};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::os;
use super::peer::{self, IO_TIMEOUT, Listener};
use ustack::sys::NetNs;

/// Bytes per read() and write() call: large, so per-call costs do not dominate.
pub const CHUNK: usize = 256 * 1024;

/// Which way the data flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The kernel client sends; the server (ustack, raw smoltcp, the kernel) receives.
    ToServer,
    /// The server sends; the kernel client receives.
    FromServer,
}

/// What a receiver saw: bytes after its first read, and the time from that read to the
/// end of the stream. Leaving the first read out keeps connection setup out of the figure.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Transfer {
    /// Gigabits per second.
    pub fn gbps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.bytes as f64 * 8.0 / secs / 1e9 } else { 0.0 }
    }
}

/// Reads until end of stream.
pub fn receive_all(r: &mut impl Read) -> io::Result<Transfer> {
    let mut buf = vec![0u8; CHUNK];
    if r.read(&mut buf)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the sender sent nothing"));
    }
    let start = Instant::now();
    let mut bytes = 0u64;
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(Transfer { bytes, elapsed: start.elapsed() }),
            n => bytes += n as u64,
        }
    }
}

/// Writes for `duration`; returns the bytes written.
pub fn send_for(w: &mut impl Write, duration: Duration) -> io::Result<u64> {
    let buf = vec![0x5au8; CHUNK];
    let end = Instant::now() + duration;
    let mut bytes = 0u64;
    while Instant::now() < end {
        w.write_all(&buf)?;
        bytes += CHUNK as u64;
    }
    Ok(bytes)
}

/// Waits for the peer's end of stream, discarding anything before it.
fn await_eof(r: &mut impl Read) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    while r.read(&mut buf)? > 0 {}
    Ok(())
}

/// What one transfer measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// The rate the receiver measured.
    pub gbps: f64,
    /// When the kernel client sent: the share of its busy time (0 to 1) that the
    /// receiver's window held it back (its `tcpi_rwnd_limited`). Near 1, the transfer ran
    /// as fast as the receiver turned its window round, whatever the sender could do.
    pub window_limited: Option<f64>,
}

/// What the kernel client of one transfer saw.
#[derive(Debug, Clone, Copy)]
pub enum ClientSaw {
    /// It sent; the share of its busy time the receiver's window held it back, if known.
    Sent { window_limited: Option<f64> },
    /// It received, and measured.
    Received(Transfer),
}

impl ClientSaw {
    /// The transfer's figures, from the client's view and, when the server received, the
    /// server's measurement.
    pub fn measured(self, server: Option<Transfer>) -> io::Result<Measured> {
        let (transfer, window_limited) = match self {
            ClientSaw::Sent { window_limited } => (server, window_limited),
            ClientSaw::Received(transfer) => (Some(transfer), None),
        };
        let transfer = transfer.ok_or_else(|| io::Error::other("nobody measured"))?;
        Ok(Measured { gbps: transfer.gbps(), window_limited })
    }
}

/// The kernel client of one transfer, run inside the client namespace: connects to
/// `addr`, then sends (and waits for the server's close) or receives (and measures).
pub fn kernel_client(addr: SocketAddrV4, dir: Direction, duration: Duration) -> io::Result<ClientSaw> {
    let mut stream = peer::connect(addr)?;
    match dir {
        Direction::ToServer => {
            send_for(&mut stream, duration)?;
            stream.shutdown(std::net::Shutdown::Write)?;
            await_eof(&mut stream)?;
            // Everything is acknowledged now: the busy time is complete.
            Ok(ClientSaw::Sent { window_limited: os::TcpInfo::of(&stream).window_limited() })
        }
        Direction::FromServer => receive_all(&mut stream).map(ClientSaw::Received),
    }
}

/// One transfer between a kernel client in `client_ns` and the server listening on
/// `listener` at `addr`.
pub fn transfer(
    listener: &dyn Listener,
    client_ns: &NetNs,
    addr: SocketAddrV4,
    dir: Direction,
    duration: Duration,
) -> io::Result<Measured> {
    std::thread::scope(|scope| {
        let server = scope.spawn(|| -> io::Result<Option<Transfer>> {
            let mut stream = peer::accept_within(listener, IO_TIMEOUT)?;
            match dir {
                Direction::ToServer => receive_all(&mut stream).map(Some),
                Direction::FromServer => {
                    send_for(&mut stream, duration)?;
                    stream.shutdown_write()?;
                    await_eof(&mut stream)?;
                    Ok(None)
                }
            }
        });
        let client = client_ns.run(|| kernel_client(addr, dir, duration)).and_then(|r| r);
        let server = peer::join_scoped(server);
        // The side that failed first explains best; a client error often follows a server one.
        let (client, server) = match (client, server) {
            (Err(c), Err(s)) => return Err(io::Error::new(s.kind(), format!("{s} (client: {c})"))),
            (c, s) => (c?, s?),
        };
        client.measured(server)
    })
}

/// Runs `transfer` (one transfer) `runs` times and prints each rate with the CPU time the
/// whole process spent per byte moved, and how much of the time the receiver's window held
/// a kernel sender back: for the examples that put one side of this scenario under a
/// profiler (`bulk_one`, `raw_one`).
pub fn print_rates_and_cpu(runs: usize, mut transfer: impl FnMut() -> io::Result<Measured>) -> io::Result<()> {
    for _ in 0..runs {
        let (cpu_before, started) = (os::cpu_time(libc::RUSAGE_SELF), Instant::now());
        let Measured { gbps, window_limited } = transfer()?;
        let cpu = (os::cpu_time(libc::RUSAGE_SELF) - cpu_before).as_secs_f64();
        // Bytes moved, roughly: the measured rate over the run's wall time.
        let bytes = gbps * 1e9 / 8.0 * started.elapsed().as_secs_f64();
        let window = window_limited.map(|w| format!(", sender held by the window {:.0}%", w * 100.0));
        println!("{gbps:.2} Gbit/s, {:.3} CPU-ns/byte{}", cpu * 1e9 / bytes, window.unwrap_or_default());
    }
    Ok(())
}

/// The arguments `bulk_one` and `raw_one` share: `MTU recv|send RUNS [MS] [BUFFER]` (1500,
/// recv, 5, 1000, the bench's 8 MiB where missing or unreadable).
pub struct OneSide {
    pub mtu: usize,
    pub dir: Direction,
    pub runs: usize,
    pub duration: Duration,
    /// Socket buffers each way, in bytes.
    pub buffer: usize,
}

impl OneSide {
    /// From the program's arguments (`args[0]` is the program): `MTU recv|send RUNS [MS]
    /// [BUFFER]`, the buffer in bytes (the bench's default unless given).
    pub fn from_args(args: &[String]) -> OneSide {
        let number = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
        let dir = match args.get(2).map(String::as_str) {
            Some("send") => Direction::FromServer,
            _ => Direction::ToServer,
        };
        OneSide {
            mtu: number(1, 1500) as usize,
            dir,
            runs: number(3, 5) as usize,
            duration: Duration::from_millis(number(4, 1000)),
            buffer: number(5, super::DEFAULT_TCP_BUFFER as u64) as usize,
        }
    }
}
