//! Devices: where frames enter and leave the stack.
//!
//! Every device is a smoltcp [`Device`] carrying raw IP packets (`Medium::Ip`), so it can
//! be driven by smoltcp directly as well as by ustack's stack thread. [`Link`] adds what a
//! thread needs to sleep on a device instead of spinning, and a way to report I/O errors
//! as values (smoltcp's `Device` has no error path; its own TUN adapter panics instead).

use std::io;
use std::os::fd::BorrowedFd;

use smoltcp::phy::{Device, RxToken, TxToken};
use smoltcp::time::Instant;

pub mod fault;
pub mod pcap;
pub mod steer;
pub mod trace;
pub mod tun;
pub mod vnet;
pub mod wire;

pub use fault::{Corruption, FaultConfig, FaultCounters, FaultInjector, FaultStats, Faults};
pub use pcap::{PcapRecorder, PcapWriter};
pub use steer::{Steered, Steering};
pub use trace::Tracer;
pub use tun::{TunConfig, TunDevice, tun_support};
pub use wire::{Wire, WireEnd};

/// A received frame the device owns outright (taken from a queue, or copied because a
/// middleware changed or kept it), handed to smoltcp as is.
#[doc(hidden)]
pub struct OwnedRxToken(pub Vec<u8>);

impl smoltcp::phy::RxToken for OwnedRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// A device the stack thread can wait on.
pub trait Link: Device + Send {
    /// A file descriptor that becomes readable when a frame may be waiting in
    /// [`Device::receive`]. The stack thread `poll(2)`s it; it never busy-waits.
    fn wait_fd(&self) -> BorrowedFd<'_>;

    /// The first I/O error the device met since the last call, if any. A device that
    /// fails stops yielding frames; the stack thread checks this after every poll and
    /// shuts the stack down with the error instead of spinning or panicking.
    fn take_error(&mut self) -> Option<io::Error> {
        None
    }

    /// Turns off whatever the device would do to frames on their way out that the stack
    /// would otherwise do itself (the TUN's checksum and segmentation offloads), so that
    /// [`Device::capabilities`] asks smoltcp for complete packets. For a middleware that
    /// damages frames: the damage must come after the checksum, as on a wire, or the
    /// kernel would checksum the damaged bytes and take them. Called before the stack
    /// reads the capabilities. Middlewares pass it on.
    fn disable_tx_offloads(&mut self) {}

    /// Takes the next received frame into `frame`, replacing its contents; false if none
    /// is waiting. The stack thread receives this way, not through [`Device::receive`]:
    /// a device that can read straight into `frame` overrides it and saves a copy of
    /// every packet (the default copies out of a receive token).
    fn receive_into(&mut self, now: Instant, frame: &mut Vec<u8>) -> bool {
        let Some((rx, _)) = self.receive(now) else { return false };
        RxToken::consume(rx, |bytes| {
            frame.clear();
            frame.extend_from_slice(bytes);
        });
        true
    }

    /// Sends `frame` as one packet; false if the device had no room for it (it is
    /// lost, as on a full link). The stack thread sends this way a packet smoltcp built
    /// in its own buffer; a device that can write straight from `frame` overrides it
    /// and saves a copy (the default copies into a transmit token).
    fn transmit_from(&mut self, now: Instant, frame: &[u8]) -> bool {
        let Some(tx) = self.transmit(now) else { return false };
        TxToken::consume(tx, frame.len(), |buf| buf.copy_from_slice(frame));
        true
    }
}
