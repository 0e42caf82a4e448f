//! An echo server (RFC 862) on ustack's tokio sockets, over a TUN: `ustack serve --tcp 7`
//! written as a tokio program. Each connection is served by a task that copies the
//! stream's read half into its write half; each UDP port by a task that sends every
//! datagram back. As root, inside a network namespace (it keeps the TUN off your network):
//!
//! ```text
//! ip netns add lab
//! ip netns exec lab cargo run --release --features tokio --example tokio_echo -- --tun ustack0 --tcp 7 &
//! ip netns exec lab sh -c 'echo hello | nc -N 10.7.0.2 7'
//! ```

#[path = "common/mod.rs"]
pub mod common;

use std::io;
use std::process::ExitCode;

use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use ustack::tokio::{TcpListener, TcpStream, UdpSocket};

/// An echo server on ustack's async sockets over a TUN.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    net: common::NetArgs,

    /// TCP port to echo on (repeatable). Without --tcp and --udp: TCP and UDP port 7.
    #[arg(long = "tcp", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    tcp: Vec<u16>,

    /// UDP port to echo on (repeatable).
    #[arg(long = "udp", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    udp: Vec<u16>,
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_logging();
    let args = Args::parse();
    common::exit_code("tokio_echo", run(args).await)
}

async fn run(mut args: Args) -> io::Result<()> {
    if args.tcp.is_empty() && args.udp.is_empty() {
        (args.tcp, args.udp) = (vec![7], vec![7]);
    }
    let stack = args.net.start()?;
    let mut servers = JoinSet::new();
    for &port in &args.tcp {
        servers.spawn(serve_tcp(TcpListener::bind(&stack, common::wildcard(port))?));
    }
    for &port in &args.udp {
        servers.spawn(serve_udp(UdpSocket::bind(&stack, common::wildcard(port))?));
    }
    println!("tokio_echo: echoing on {} (TCP {:?}, UDP {:?})", args.net.stack_ips(), args.tcp, args.udp);
    // The servers run until one fails (the stack stops); `stack` lives as long.
    while let Some(done) = servers.join_next().await {
        done.map_err(io::Error::other)??;
    }
    Ok(())
}

/// Accepts connections on `listener` for ever, each echoed by a task of its own.
pub async fn serve_tcp(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            match echo(stream).await {
                Ok(bytes) => log::info!("{peer}: echoed {bytes} bytes"),
                Err(e) => log::warn!("{peer}: {e}"),
            }
        });
    }
}

/// Sends back what arrives until the peer's FIN, then sends FIN. Returns the bytes echoed.
pub async fn echo(mut stream: TcpStream) -> io::Result<u64> {
    let (mut reader, mut writer) = stream.split();
    let bytes = tokio::io::copy(&mut reader, &mut writer).await?;
    writer.shutdown().await?;
    Ok(bytes)
}

/// Sends every datagram back to its sender, for ever.
pub async fn serve_udp(socket: UdpSocket) -> io::Result<()> {
    let mut buf = vec![0; 65536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        socket.send_to(&buf[..n], from).await?;
    }
}
