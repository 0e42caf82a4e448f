//! ustack: a userspace TCP/UDP stack on smoltcp, with the Berkeley socket API, that shows
//! what the kernel hides.
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
//! Beside them, [`observe`] reads capture files into flow tables and ladder diagrams
//! (`ustack inspect`).
//!
//! This crate is the library alone. The command line (`ustack-cli`, the `ustack` binary),
//! the bench (`ustack-bench`), the replay (`ustack-replay`) and the test kit
//! (`ustack-testkit`) are crates beside it in the workspace's `crates/`; they depend on
//! it, never the reverse.

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

pub use cidr::{Cidr, CidrError};
pub use engine::{Engine, StackConfig};
pub use errno::Errno;
pub use socket::{Domain, Events, MsgFlags, PollFd, Shutdown, Socket, TcpListener, TcpStream, Type, UdpSocket, poll};
pub use stack::Stack;

/// The README's code blocks as doctests, so that its library example compiles and runs
/// under `cargo test --doc`. Only for doctests: the crate's documentation stays its own.
/// (Its shell blocks are run by `crates/cli/tests/readme.rs`; rustdoc skips them, and the
/// README labels its other blocks `text`.)
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
