//! The applications `serve` runs on its sockets (`--app`): echo (RFC 862) and discard
//! (RFC 863), served by the test kit's [`servers`](ustack_testkit::servers), and a small
//! HTTP server in [`http`](super::http).

use std::fmt;

use clap::ValueEnum;
use ustack_testkit::servers;

/// What a server does with what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum App {
    /// Send everything back (RFC 862); for TCP, close after the client does.
    Echo,
    /// Read and drop everything (RFC 863).
    Discard,
    /// HTTP/1.1, TCP only: GET / shows the asking connection's 5-tuple, handshake
    /// timeline and RTT, and the demux table (JSON with Accept: application/json); /ui
    /// the live view, /api/demux, /api/listeners, /api/handshakes, /api/counters its JSON.
    Http,
}

impl App {
    /// Whether the application can serve UDP ports.
    pub fn serves_udp(self) -> bool {
        self != App::Http
    }

    /// Echo or discard, as the servers run them; `None` for HTTP.
    pub fn echo_or_discard(self) -> Option<servers::App> {
        match self {
            App::Echo => Some(servers::App::Echo),
            App::Discard => Some(servers::App::Discard),
            App::Http => None,
        }
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
