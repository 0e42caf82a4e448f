//! ustack: a userspace TCP/UDP stack on smoltcp, with the Berkeley socket API, that shows
//! what the kernel hides.
//!
//! Layers, top to bottom (each uses only those below it):
//! - [`socket`]: the Berkeley API ([`Socket`]), errno type, std-like wrappers.
//! - [`stack`]: the thread that owns the smoltcp interface; ustack's demux table,
//!   listener queues and ports.
//! - [`device`]: TUN and in-memory wire devices (smoltcp `phy::Device`s).
//! - [`sys`]: network namespaces and netlink, for the TUN and for tests.
//!
//! Beside them, [`packet`] decodes and formats packets, and [`observe`] reads capture
//! files into flow tables and ladder diagrams (`ustack inspect`).
//!
//! This crate is the library alone. The command line (`ustack-cli`, the `ustack` binary),
//! the bench (`ustack-bench`), the replay (`ustack-replay`) and the test kit
//! (`ustack-testkit`) are crates beside it in the workspace's `crates/`; they depend on
//! it, never the reverse.

pub mod device;
pub mod observe;
pub mod packet;
pub mod socket;
pub mod stack;
pub mod sys;

pub use socket::{Domain, Errno, Events, PollFd, Shutdown, Socket, TcpListener, TcpStream, Type, UdpSocket, poll};
pub use stack::{Stack, StackConfig};
