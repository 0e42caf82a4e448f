//! An HTTP server built with axum, served on ustack's tokio sockets over a TUN. `GET /`
//! answers with what ustack knows about the very connection asking: its 5-tuple, the TCP
//! states it went through and the handshake's round trip. As root, in a namespace:
//!
//! ```text
//! ip netns add lab
//! ip netns exec lab cargo run --release --features tokio --example http -- --tun ustack0 --tcp 8080 &
//! ip netns exec lab curl -s http://10.7.0.2:8080/
//! ```
//!
//! axum serves anything that implements its `Listener` trait; [`UstackListener`] is that
//! for ustack's [`TcpListener`], and [`Connection`] is what each request learns of its
//! connection (axum's `ConnectInfo`).

#[path = "common/mod.rs"]
pub mod common;

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::routing::get;
use axum::serve::IncomingStream;
use clap::Parser;
use ustack::engine::ConnectionInfo;
use ustack::tokio::{TcpListener, TcpStream};

/// An axum HTTP server on ustack's async sockets over a TUN.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    net: common::NetArgs,

    /// TCP port to serve HTTP on.
    #[arg(long = "tcp", value_name = "PORT", default_value_t = 80, value_parser = clap::value_parser!(u16).range(1..))]
    tcp: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    let args = Args::parse();
    common::exit_code("http", run(args).await)
}

async fn run(args: Args) -> io::Result<()> {
    let stack = args.net.start()?;
    let listener = TcpListener::bind(&stack, common::wildcard(args.tcp))?;
    let urls: Vec<String> =
        stack.addrs().iter().map(|cidr| format!("http://{}/", SocketAddr::new(cidr.addr(), args.tcp))).collect();
    println!("http: axum on ustack, serving {}", urls.join(" and "));
    serve(listener).await
}

/// Serves the app on `listener` until the stack stops.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    axum::serve(UstackListener(listener), app().into_make_service_with_connect_info::<Connection>()).await
}

/// The routes: `/` describes the connection it came on.
pub fn app() -> Router {
    Router::new().route("/", get(describe))
}

/// ustack's listener as axum's [`axum::serve::Listener`].
pub struct UstackListener(pub TcpListener);

impl axum::serve::Listener for UstackListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    /// The next connection. axum wants no errors here: they are logged, and accept()
    /// tried again a moment later (what axum does for tokio's listener).
    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// What a request learns about its connection, taken when the connection is accepted.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    pub info: Option<ConnectionInfo>,
}

impl Connected<IncomingStream<'_, UstackListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, UstackListener>) -> Connection {
        Connection { peer: *stream.remote_addr(), info: stream.io().connection_info() }
    }
}

/// `GET /`: the connection's 5-tuple, its states with times from the first SYN, and the
/// handshake's round trip, as ustack recorded them.
async fn describe(ConnectInfo(conn): ConnectInfo<Connection>) -> String {
    let mut body = String::from("Hello from axum on ustack, a userspace TCP/IP stack.\n");
    let Some(info) = conn.info else {
        let _ = writeln!(body, "peer {} (no record of the connection)", conn.peer);
        return body;
    };
    let _ = writeln!(body, "connection: {}", info.tuple);
    let _ = writeln!(body, "handshake:");
    for (ms, state) in &info.timeline {
        let _ = writeln!(body, "  {ms:>9.3} ms  {state}");
    }
    if let Some(rtt) = info.handshake_rtt_ms {
        let _ = writeln!(body, "handshake rtt: {rtt:.3} ms");
    }
    body
}
