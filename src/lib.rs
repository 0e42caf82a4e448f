//! ustack: a userspace TCP/UDP stack on smoltcp, with the Berkeley socket API, that shows
//! what the kernel hides.
//!
//! A program written for `std::net` runs on ustack with its imports changed and the stack
//! given to the constructors ([`TcpListener`], [`TcpStream`], [`UdpSocket`]); [`Socket`]
//! is the Berkeley API itself, with setsockopt's options and send/recv's flags, and errno
//! as Linux gives it. Here two stacks are joined by an in-memory wire (no root needed; a
//! real program opens a [`device::TunDevice`] instead):
//!
//! ```
//! use std::io::{Read, Write};
//! use ustack::{Stack, StackConfig, TcpListener, TcpStream, device::Wire};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b) = Wire::pair(1500)?;
//! let server = Stack::new(b, StackConfig { addrs: vec!["10.0.0.2/24".parse()?], ..Default::default() })?;
//! let client = Stack::new(a, StackConfig { addrs: vec!["10.0.0.1/24".parse()?], ..Default::default() })?;
//!
//! let listener = TcpListener::bind(&server, "10.0.0.2:7")?;
//! let mut stream = TcpStream::connect(&client, "10.0.0.2:7")?;
//! let (mut accepted, peer) = listener.accept()?;
//! assert_eq!(peer, stream.local_addr()?);
//! stream.write_all(b"hello")?;
//! let mut got = [0; 5];
//! accepted.read_exact(&mut got)?;
//! assert_eq!(&got, b"hello");
//! # Ok(())
//! # }
//! ```
//!
//! Layers, top to bottom (each uses only those below it; docs/architecture.md draws them):
//! - [`socket`]: the Berkeley API ([`Socket`]) with the kernel's blocking rules, and
//!   std-like wrappers. It only waits: every call is answered by the engine.
//! - [`stack`]: the stack thread, the driver that runs an engine on a device and the real
//!   clock, behind one lock.
//! - [`engine`]: all protocol state — smoltcp's interface and sockets, ustack's demux
//!   table, listener queues and ports — in one value with no thread, lock, clock or device
//!   of its own, driven with the time as an argument. A simulation drives several.
//! - [`device`]: TUN and in-memory wire devices and middleware (smoltcp `phy::Device`s).
//! - [`packet`]: decoding and tcpdump-style formatting of packets.
//! - [`sys`]: network namespaces and netlink, for the TUN and for tests.
//! - [`errno`]: the one error type, at the bottom.
//! - [`sim`]: the engine's second driver: several engines over a simulated lossy link on a
//!   virtual clock (`ustack sim`, and the deterministic tests).
//!
//! With the `tokio` feature, `tokio` has async sockets for tokio on the same stack, woken
//! by the stack thread through wakers.
//!
//! Beside them, [`observe`] reads capture files into flow tables and ladder diagrams
//! (`ustack inspect`).
//!
//! This crate is the library alone. The command line (`ustack-cli`, the `ustack` binary),
//! the bench (`ustack-bench`), the replay (`ustack-replay`) and the test kit
//! (`ustack-testkit`) are crates beside it in the workspace's `crates/`; they depend on
//! it, never the reverse.

#![warn(missing_docs)]

mod cidr;
pub mod device;
pub mod engine;
pub mod errno;
pub mod observe;
pub mod packet;
pub mod sim;
pub mod socket;
pub mod stack;
pub mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use cidr::{Cidr, CidrError};
pub use engine::{Congestion, Engine, LossRecovery, StackConfig};
pub use errno::Errno;
pub use socket::{
    Domain, Events, Incoming, IntoIncoming, MsgFlags, PollFd, Shutdown, Socket, TcpListener, TcpStream, Type,
    UdpSocket, poll,
};
pub use stack::Stack;

/// A TCP connection's state (RFC 9293's names via `Display`), as [`Socket::tcp_state`]
/// reports it: smoltcp's own type, re-exported so that no smoltcp dependency is needed.
pub use smoltcp::socket::tcp::State as TcpState;

/// smoltcp 0.14, the protocol implementation under ustack, re-exported on purpose for
/// the layers below the socket API that speak its types: [`device`]s are
/// `smoltcp::phy::Device`s (to write your own), and [`engine`] and [`sim`] take
/// `smoltcp::time::Instant`s and name connections by `smoltcp::iface::SocketHandle`.
/// Code using them needs no separate, version-matched smoltcp dependency. The socket API
/// ([`Stack`], [`Socket`], [`TcpStream`], ...) needs none of it.
pub use smoltcp;

/// The README's code blocks as doctests, so that its library example compiles and runs
/// under `cargo test --doc`. Only for doctests: the crate's documentation stays its own.
/// (Its shell blocks are run by `crates/cli/tests/readme.rs`; rustdoc skips them, and the
/// README labels its other blocks `text`.)
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
