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
//! Beside them, [`observe`] reads capture files into flow tables and ladder diagrams
//! (`ustack inspect`).

pub mod device;
pub mod observe;
pub mod packet;
pub mod socket;
pub mod stack;
pub mod sys;

pub use socket::{Domain, Errno, Events, PollFd, Shutdown, Socket, TcpListener, TcpStream, Type, UdpSocket, poll};
pub use stack::{Stack, StackConfig};
