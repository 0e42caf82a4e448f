//! The device smoltcp sees while it processes one frame the demux let through.

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;

/// Yields one already-received frame, and transmits (replies) through the real device.
pub struct OneFrame<'a, D> {
    frame: Option<&'a [u8]>,
    device: &'a mut D,
}

impl<'a, D: Device> OneFrame<'a, D> {
    pub fn new(frame: &'a [u8], device: &'a mut D) -> Self {
        OneFrame { frame: Some(frame), device }
    }
}

pub struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// A transmit token of the real device, or a sink if it had no room (the reply is lost,
/// as it would be on a full link).
pub struct Tx<T>(Option<T>);

impl<T: phy::TxToken> phy::TxToken for Tx<T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.0 {
            Some(token) => token.consume(len, f),
            None => f(&mut vec![0; len]),
        }
    }
}

impl<'a, D: Device> Device for OneFrame<'a, D> {
    type RxToken<'b>
        = Rx<'a>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<D::TxToken<'b>>
    where
        Self: 'b;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.frame.take()?;
        Some((Rx(frame), Tx(self.device.transmit(now))))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.device.transmit(now).map(|t| Tx(Some(t)))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}
