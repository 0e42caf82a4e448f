//! The applications `serve` runs on its sockets: echo (RFC 862) and discard (RFC 863)
//! here, and a small HTTP server in [`http`](super::http).

use std::fmt;
use std::net::{Shutdown, SocketAddr};

use clap::ValueEnum;
use ustack::{Errno, Socket};

/// Buffer for one recv(): a few segments' worth, or any datagram.
const BUF: usize = 64 * 1024;

/// What a server does with what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum App {
    /// Send everything back (RFC 862); for TCP, close after the client does.
    Echo,
    /// Read and drop everything (RFC 863).
    Discard,
    /// HTTP/1.1, TCP only: GET / shows the asking connection's 5-tuple, handshake
    /// timeline and RTT, and the demux table (JSON with Accept: application/json).
    Http,
}

impl App {
    /// Whether the application can serve UDP ports.
    pub fn serves_udp(self) -> bool {
        self != App::Http
    }
}

impl fmt::Display for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            App::Echo => "echo",
            App::Discard => "discard",
            App::Http => "http",
        })
    }
}

/// How a TCP connection ended, for the log.
#[derive(Debug)]
pub struct StreamEnd {
    /// Bytes received (and, for echo, sent back).
    pub bytes: u64,
    /// The error that ended it, if it did not end with the client's FIN.
    pub error: Option<Errno>,
}

/// Serves one accepted TCP connection with echo or discard until the client closes its
/// side (recv() == 0), then closes ours: echo sends a FIN after the last echoed byte.
pub fn serve_stream(app: App, conn: &Socket) -> StreamEnd {
    let mut buf = vec![0; BUF];
    let mut bytes = 0;
    loop {
        let n = match conn.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return StreamEnd { bytes, error: Some(e) },
        };
        bytes += n as u64;
        if app == App::Echo {
            let mut sent = 0;
            while sent < n {
                match conn.send(&buf[sent..n]) {
                    Ok(k) => sent += k,
                    Err(e) => return StreamEnd { bytes, error: Some(e) },
                }
            }
        }
    }
    let error = conn.shutdown(Shutdown::Write).err().filter(|&e| e != Errno::ENOTCONN);
    StreamEnd { bytes, error }
}

/// Serves a bound UDP socket until the stack stops: echo answers every datagram to its
/// sender, whole. Returns the error that stopped it (ENETDOWN when the stack shut down).
pub fn serve_datagrams(app: App, socket: &Socket, mut on_error: impl FnMut(SocketAddr, Errno)) -> Errno {
    let mut buf = vec![0; BUF];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(Errno::EAGAIN) => continue,
            Err(e) => return e,
        };
        if app == App::Echo {
            match socket.send_to(&buf[..n], from) {
                Ok(_) => {}
                Err(Errno::ENETDOWN) => return Errno::ENETDOWN,
                // One datagram lost is UDP's normal: report it and go on.
                Err(e) => on_error(from, e),
            }
        }
    }
}
