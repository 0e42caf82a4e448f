//! Loopback: packets the stack sends to one of its own addresses come back to it instead
//! of going out on the device, as Linux routes them through `lo`. smoltcp has no loopback
//! of its own for an IP-medium device, so without this a socket could not reach a
//! listener on its own stack.

use std::collections::VecDeque;
use std::net::IpAddr;

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use smoltcp::wire::{IpVersion, Ipv4Packet, Ipv6Packet};

/// The destination of an IP packet, if it parses.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match IpVersion::of_packet(packet).ok()? {
        IpVersion::Ipv4 => Some(IpAddr::V4(Ipv4Packet::new_checked(packet).ok()?.dst_addr())),
        IpVersion::Ipv6 => Some(IpAddr::V6(Ipv6Packet::new_checked(packet).ok()?.dst_addr())),
    }
}

/// The device smoltcp transmits through: packets to `local` addresses go to `queue`, the
/// stack thread's loopback queue, and everything else to the real device. It never
/// receives: the stack thread takes frames from the queue and the device itself.
pub struct Looped<'a, D> {
    pub device: &'a mut D,
    pub local: &'a [IpAddr],
    pub queue: &'a mut VecDeque<Vec<u8>>,
    /// Where a packet is built before its destination is known; reused, so the common
    /// case costs a copy but no allocation.
    pub scratch: &'a mut Vec<u8>,
}

pub struct Tx<'a, T> {
    token: T,
    local: &'a [IpAddr],
    queue: &'a mut VecDeque<Vec<u8>>,
    scratch: &'a mut Vec<u8>,
}

impl<T: phy::TxToken> phy::TxToken for Tx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.scratch.clear();
        self.scratch.resize(len, 0);
        let result = f(self.scratch);
        if destination(self.scratch).is_some_and(|dst| self.local.contains(&dst)) {
            self.queue.push_back(self.scratch.clone());
        } else {
            self.token.consume(len, |buf| buf.copy_from_slice(self.scratch));
        }
        result
    }
}

pub struct NoRx;

impl phy::RxToken for NoRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&[])
    }
}

impl<D: Device> Device for Looped<'_, D> {
    type RxToken<'b> = NoRx where Self: 'b;
    type TxToken<'b> = Tx<'b, D::TxToken<'b>> where Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }

    /// A token only while the real device has room, so smoltcp keeps what it cannot send.
    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let token = self.device.transmit(now)?;
        Some(Tx { token, local: self.local, queue: &mut *self.queue, scratch: &mut *self.scratch })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}
