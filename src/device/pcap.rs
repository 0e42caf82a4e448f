//! A middleware device that records every packet to a pcap file.
//!
//! `PcapRecorder<D, W>` wraps any [`Link`] and is one, like smoltcp's `phy::PcapWriter`:
//! every packet received and sent is appended to `W` as a classic pcap record,
//! LINKTYPE_RAW (101, raw IPv4/IPv6, what `Medium::Ip` carries), microsecond timestamps
//! from the wall clock. Each record is flushed as it is written, so `tcpdump -r` reads
//! the file while the stack runs and after the process is killed.
//!
//! A write error never panics and never stops the traffic: it is kept and handed to the
//! stack thread by [`Link::take_error`] (which shuts the stack down with it), and
//! recording stops.

use std::cell::RefCell;
use std::io::{self, Write};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use byteorder::LittleEndian;
use pcap_file::pcap::{PcapHeader, PcapPacket};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};
use smoltcp::phy::{self, Device, DeviceCapabilities, PacketMeta};
use smoltcp::time::Instant;

use super::Link;
use super::trace::wall_clock;

/// Bytes of each packet recorded, as tcpdump's default snapshot length; longer packets
/// are cut (their original length is kept in the record).
pub const SNAPLEN: u32 = 262_144;

/// Records every packet through the wrapped device; see the [module docs](self).
pub struct PcapRecorder<D, W: Write> {
    inner: D,
    sink: RefCell<Sink<W>>,
}

/// A classic pcap file being written: LINKTYPE_RAW, microsecond timestamps, each record
/// flushed as it is written.
pub struct PcapWriter<W> {
    writer: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header to `writer`.
    pub fn new(mut writer: W) -> io::Result<Self> {
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::RAW,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        header.write_to(&mut writer).map_err(io_error)?;
        writer.flush()?;
        Ok(PcapWriter { writer })
    }

    /// Appends `packet` as a record at `ts` (since the Unix epoch), cut to [`SNAPLEN`].
    pub fn write(&mut self, ts: Duration, packet: &[u8]) -> io::Result<()> {
        let orig_len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        let kept = &packet[..packet.len().min(SNAPLEN as usize)];
        let record = PcapPacket::new(ts, orig_len, kept);
        // pcap-file's own PcapWriter owns its writer without a way to flush it, so records
        // are written with its serializer directly.
        record.write_to::<_, LittleEndian>(&mut self.writer, TsResolution::MicroSecond, SNAPLEN).map_err(io_error)?;
        self.writer.flush()
    }

    /// The writer (everything written is already flushed).
    pub fn into_inner(self) -> W {
        self.writer
    }
}

struct Sink<W> {
    writer: PcapWriter<W>,
    clock: fn() -> Duration,
    /// The first write error, until `take_error` hands it over.
    error: Option<io::Error>,
    /// Set by the first error: a file with a torn record is not written to again.
    failed: bool,
}

impl<W: Write> Sink<W> {
    fn record(&mut self, packet: &[u8]) {
        if self.failed {
            return;
        }
        let result = self.write(packet);
        if let Err(e) = result {
            self.failed = true;
            self.error = Some(e);
        }
    }

    fn write(&mut self, packet: &[u8]) -> io::Result<()> {
        self.writer.write((self.clock)(), packet)
    }
}

fn io_error(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl<D, W: Write> PcapRecorder<D, W> {
    /// Wraps `inner`, writing the pcap file header to `writer` at once.
    pub fn new(inner: D, writer: W) -> io::Result<Self> {
        let writer = PcapWriter::new(writer)?;
        let sink = Sink { writer, clock: wall_clock, error: None, failed: false };
        Ok(PcapRecorder { inner, sink: RefCell::new(sink) })
    }

    /// Reads timestamps from `clock` (time since the Unix epoch) instead of the wall
    /// clock; tests pass a fixed one.
    pub fn with_clock(self, clock: fn() -> Duration) -> Self {
        self.sink.borrow_mut().clock = clock;
        self
    }

    /// The wrapped device. Reading from it directly bypasses the recorder.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably. Reading from it directly bypasses the recorder.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Unwraps the device and the writer (everything recorded is already flushed).
    pub fn into_parts(self) -> (D, W) {
        (self.inner, self.sink.into_inner().writer.into_inner())
    }
}

impl<D: Device, W: Write> Device for PcapRecorder<D, W> {
    type RxToken<'a>
        = RxToken<'a, D::RxToken<'a>, W>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, D::TxToken<'a>, W>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let sink = &self.sink;
        let (rx, tx) = self.inner.receive(now)?;
        Some((RxToken { token: rx, sink }, TxToken { token: tx, sink }))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let sink = &self.sink;
        self.inner.transmit(now).map(|token| TxToken { token, sink })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

impl<D: Link, W: Write + Send> Link for PcapRecorder<D, W> {
    fn disable_tx_offloads(&mut self) {
        self.inner.disable_tx_offloads();
    }

    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.inner.wait_fd()
    }

    /// The inner device's error first; then the recorder's own write error.
    fn take_error(&mut self) -> Option<io::Error> {
        self.inner.take_error().or_else(|| self.sink.get_mut().error.take())
    }

    fn receive_into(&mut self, now: Instant, frame: &mut Vec<u8>) -> bool {
        let received = self.inner.receive_into(now, frame);
        if received {
            self.sink.get_mut().record(frame);
        }
        received
    }

    fn transmit_from(&mut self, now: Instant, frame: &[u8]) -> bool {
        self.sink.get_mut().record(frame);
        self.inner.transmit_from(now, frame)
    }
}

#[doc(hidden)]
pub struct RxToken<'a, T, W> {
    token: T,
    sink: &'a RefCell<Sink<W>>,
}

impl<T: phy::RxToken, W: Write> phy::RxToken for RxToken<'_, T, W> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let sink = self.sink;
        self.token.consume(|packet| {
            sink.borrow_mut().record(packet);
            f(packet)
        })
    }

    fn meta(&self) -> PacketMeta {
        self.token.meta()
    }
}

#[doc(hidden)]
pub struct TxToken<'a, T, W> {
    token: T,
    sink: &'a RefCell<Sink<W>>,
}

impl<T: phy::TxToken, W: Write> phy::TxToken for TxToken<'_, T, W> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let sink = self.sink;
        self.token.consume(len, |packet| {
            let result = f(packet);
            sink.borrow_mut().record(packet);
            result
        })
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.token.set_meta(meta)
    }
}
