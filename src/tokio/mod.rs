//! Async sockets for tokio: [`TcpListener`], [`TcpStream`] (with tokio's `AsyncRead` and
//! `AsyncWrite`) and [`UdpSocket`], shaped like `tokio::net`'s, on a [`Stack`](crate::Stack).
//! Behind the `tokio` cargo feature.
//!
//! Each try of an async call is one non-blocking call on the engine, as the blocking layer
//! makes ([`crate::socket`]). When the engine says EAGAIN, the task's waker is left with
//! the stack, under the same lock hold as the call, and the future is Pending; the stack
//! thread wakes it after a round that touched the socket (a packet, a timer, a state
//! change). No polling loop, no thread per socket, and no tokio reactor: these types
//! work on any tokio runtime (and any executor), and only use tokio's I/O traits.
//!
//! Cancellation is as safe as with tokio's own types: nothing is taken from the stack
//! except in the call that returns it, so dropping an unfinished `accept()` loses no
//! connection and dropping an unfinished `recv_from()` loses no datagram. Each method
//! says what it guarantees.
//!
//! Differences from `tokio::net`: the constructors take the stack and a [`SocketAddr`]
//! (ustack resolves no names), and `bind` is not async (there is nothing to wait for).
//! Socket timeouts (SO_RCVTIMEO, SO_SNDTIMEO) do not apply: use `tokio::time::timeout`.
//!
//! ```no_run
//! # async fn run(stack: &ustack::Stack) -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let listener = ustack::tokio::TcpListener::bind(stack, "0.0.0.0:7".parse().unwrap())?;
//! loop {
//!     let (mut stream, _peer) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let mut buf = [0; 4096];
//!         while let Ok(n @ 1..) = stream.read(&mut buf).await {
//!             if stream.write_all(&buf[..n]).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! [`SocketAddr`]: std::net::SocketAddr

mod tcp;
mod udp;

pub use tcp::{OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, TcpListener, TcpStream, WriteHalf};
pub use udp::UdpSocket;

use std::net::SocketAddr;

use crate::socket::Domain;

fn domain_of(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() { Domain::Inet } else { Domain::Inet6 }
}
