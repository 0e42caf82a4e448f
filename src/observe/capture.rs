//! Reading capture files: pcap (either byte order, microsecond or nanosecond) and pcapng
//! (any number of sections and interfaces, each with its own link type and timestamp
//! resolution), from any `Read` — a file or standard input.
//!
//! The container formats are parsed by pcap-file's parsers ([`PcapParser`],
//! [`PcapNgParser`]); this module feeds them from a buffer of its own rather than
//! through pcap-file's readers, because those readers:
//! - allocate 8 MB up front for every file, and answer a length field that lies (a record
//!   claiming 4 GiB) by reading up to 8 MB before failing with the same `UnexpectedEof`
//!   as a file cut short, so the cause is lost;
//! - refuse a record whose original length exceeds the snapshot length, which is exactly
//!   what every capture made with `tcpdump -s N` contains;
//! - read an Enhanced Packet Block's timestamp as nanoseconds whatever the interface's
//!   `if_tsresol` says (pcapng's default is microseconds).
//!
//! Here each record's length field is checked against [`MAX_RECORD`] (pcapng blocks
//! against [`MAX_BLOCK`]) *before* its bytes are read, so the buffer never grows past
//! `MAX_BLOCK`, and the parsers only ever see a whole record.

use std::fmt;
use std::io::{self, Read};
use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{Endianness, PcapError, TsResolution};

use crate::packet::{Net, Summary, decode_link};

/// The most bytes one record may hold: libpcap's `MAXIMUM_SNAPLEN` (256 KiB), above
/// any link's MTU. A record claiming more is refused before anything is read.
pub const MAX_RECORD: usize = 256 * 1024;

/// The most bytes one pcapng block may span: a record of [`MAX_RECORD`] bytes and
/// room for its header and options.
pub const MAX_BLOCK: usize = MAX_RECORD + 64 * 1024;

/// Bytes read from the source at a time.
const CHUNK: usize = 64 * 1024;

/// pcap's file header, before the first record.
const PCAP_HEADER: usize = 24;
/// A pcap record's header, before its bytes.
const PCAP_RECORD_HEADER: usize = 16;
/// The first word of a pcapng file (the Section Header Block type; the same in both
/// byte orders).
const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
/// A pcapng block's type and length words, and its trailing length word.
const BLOCK_OVERHEAD: usize = 12;
/// libpcap's `LT_LINKTYPE`: the link type proper, without the FCS-length bits some
/// writers put in the high bits of the pcap header's field.
const LINKTYPE_MASK: u32 = 0x03FF_FFFF;

/// A capture file's container format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The classic libpcap format.
    Pcap {
        /// Timestamps in nanoseconds (magic `a1b23c4d`) rather than microseconds.
        nanosecond: bool,
        /// Written in big-endian byte order.
        big_endian: bool,
    },
    /// pcapng.
    PcapNg,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Pcap { nanosecond, big_endian } => write!(
                f,
                "pcap ({}, {})",
                if *nanosecond { "nanosecond" } else { "microsecond" },
                if *big_endian { "big-endian" } else { "little-endian" }
            ),
            Format::PcapNg => f.write_str("pcapng"),
        }
    }
}

/// One captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// When it was captured, as time since the Unix epoch.
    pub ts: Duration,
    /// The link type of its interface (a `LINKTYPE_*` number, see
    /// [`linktype`](crate::packet::linktype)).
    pub linktype: u32,
    /// The captured bytes (at most the snapshot length of the capture).
    pub data: &'a [u8],
    /// The frame's length on the wire; more than `data.len()` when the capture's
    /// snapshot length cut it.
    pub orig_len: u32,
}

impl Record<'_> {
    /// Decodes the frame, telling what the capture cut apart from what the packet lacked:
    /// a packet cut by the snapshot length is not "truncated" as tcpdump means it (the IP
    /// header claiming more than arrived on the wire), so [`Ip::missing`] is counted from
    /// the original length, as tcpdump counts it.
    ///
    /// [`Ip::missing`]: crate::packet::Ip::missing
    pub fn decode(&self) -> Summary {
        let mut summary = decode_link(self.linktype, self.data);
        let orig_len = usize::try_from(self.orig_len).unwrap_or(usize::MAX);
        if orig_len > self.data.len()
            && let Net::Ip(ip) = &mut summary.net
        {
            let link_len = summary.link.as_ref().map_or(0, |l| l.header_len);
            let on_wire = orig_len.saturating_sub(link_len);
            ip.missing = ip.total_len.saturating_sub(on_wire);
        }
        summary
    }
}

/// Why a capture could not be read (further). Its `Display` is one line.
#[derive(Debug)]
pub enum CaptureError {
    /// Nothing at all to read.
    Empty,
    /// The first bytes are no pcap or pcapng magic.
    NotCapture {
        /// The first bytes (up to 4).
        start: Vec<u8>,
    },
    /// The file ends inside a header or record.
    Truncated(String),
    /// A length field claims more than any capture holds.
    Absurd(String),
    /// A header or block that cannot be what it says.
    Invalid(String),
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Empty => f.write_str("empty file: not a capture"),
            CaptureError::NotCapture { start } => {
                let hex: Vec<String> = start.iter().map(|b| format!("{b:02x}")).collect();
                write!(f, "not a pcap or pcapng file (it starts with {})", hex.join(" "))
            }
            CaptureError::Truncated(what) => write!(f, "file cut short: {what}"),
            CaptureError::Absurd(what) | CaptureError::Invalid(what) => f.write_str(what),
            CaptureError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CaptureError {}

impl From<io::Error> for CaptureError {
    fn from(e: io::Error) -> Self {
        CaptureError::Io(e)
    }
}

/// A pcap-file error on bytes it was given whole: whatever it says, the data is at fault.
fn invalid(what: impl fmt::Display, e: PcapError) -> CaptureError {
    match e {
        // Never "need more bytes" here: the parsers get a whole record or block, so a
        // parser asking for more means a length inside it runs past its end.
        PcapError::IncompleteBuffer => CaptureError::Invalid(format!("{what}: a length inside it runs past its end")),
        PcapError::IoError(e) => CaptureError::Io(e),
        e => CaptureError::Invalid(format!("{what}: {e}")),
    }
}

/// A growable window on the source: the bytes read but not yet consumed.
struct Feed<R> {
    source: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Offset in the source of `buf[start]`.
    offset: u64,
}

impl<R: Read> Feed<R> {
    fn new(source: R) -> Self {
        Feed { source, buf: Vec::new(), start: 0, end: 0, eof: false, offset: 0 }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads until `want` bytes are available or the source ends. Callers bound `want`
    /// by [`MAX_BLOCK`], so the buffer never grows past it.
    fn fill(&mut self, want: usize) -> io::Result<()> {
        while self.end - self.start < want && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let room = want.max(CHUNK);
            if self.buf.len() < room {
                self.buf.resize(room, 0);
            }
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether nothing is left: the source ended and everything read was consumed.
    fn at_end(&mut self) -> io::Result<bool> {
        self.fill(1)?;
        Ok(self.start == self.end)
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.offset += n as u64;
    }
}

fn u32_at(bytes: &[u8], at: usize, endianness: Endianness) -> Option<u32> {
    let word: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(match endianness {
        Endianness::Big => u32::from_be_bytes(word),
        Endianness::Little => u32::from_le_bytes(word),
    })
}

/// The container being read, with its parser.
enum Container {
    Pcap(PcapParser),
    PcapNg(Box<PcapNgParser>),
}

/// Reads the records of a pcap or pcapng capture one at a time, in file order.
///
/// Memory is bounded whatever the input: the buffer holds at most one pcapng block of
/// [`MAX_BLOCK`] bytes (a pcap record of [`MAX_RECORD`] and its header), and a record's
/// length is checked before its bytes are read.
pub struct CaptureReader<R> {
    feed: Feed<R>,
    container: Container,
    format: Format,
    /// Records (pcap) or blocks (pcapng) read so far.
    count: u64,
    /// The last record's bytes, which [`Record::data`] borrows.
    frame: Vec<u8>,
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header (pcap) or the first section header (pcapng).
    pub fn new(source: R) -> Result<Self, CaptureError> {
        let mut feed = Feed::new(source);
        feed.fill(PCAP_HEADER)?;
        let head = feed.available();
        if head.is_empty() {
            return Err(CaptureError::Empty);
        }
        let magic = head.get(..4).map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]));
        let (container, format) = match magic {
            Some(0xA1B2_C3D4 | 0xA1B2_3C4D | 0xD4C3_B2A1 | 0x4D3C_B2A1) => {
                if head.len() < PCAP_HEADER {
                    return Err(CaptureError::Truncated(format!(
                        "the pcap file header has {} of its {PCAP_HEADER} bytes",
                        head.len()
                    )));
                }
                let parser = match PcapParser::new(head) {
                    Ok((_, parser)) => parser,
                    Err(e) => return Err(invalid("the pcap file header", e)),
                };
                let header = parser.header();
                // libpcap holds the snapshot length in an int: past i32::MAX it is negative,
                // which no writer means.
                if header.snaplen > i32::MAX as u32 {
                    return Err(CaptureError::Absurd(format!(
                        "the pcap file header's snapshot length {} is absurd (more than {})",
                        header.snaplen,
                        i32::MAX
                    )));
                }
                feed.consume(PCAP_HEADER);
                let format = Format::Pcap {
                    nanosecond: header.ts_resolution == TsResolution::NanoSecond,
                    big_endian: header.endianness == Endianness::Big,
                };
                (Container::Pcap(parser), format)
            }
            Some(PCAPNG_SHB) => {
                let len = section_header_len(&mut feed, 0)?;
                let parsed = PcapNgParser::new(&feed.available()[..len]);
                let parser = match parsed {
                    Ok((_, parser)) => parser,
                    Err(e) => return Err(invalid("the pcapng section header (block 1, at byte 0)", e)),
                };
                feed.consume(len);
                (Container::PcapNg(Box::new(parser)), Format::PcapNg)
            }
            _ => return Err(CaptureError::NotCapture { start: head[..head.len().min(4)].to_vec() }),
        };
        let count = u64::from(format == Format::PcapNg);
        Ok(CaptureReader { feed, container, format, count, frame: Vec::new() })
    }

    /// The container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The next record; `Ok(None)` at the end of the file. After an error the reader
    /// should not be used further.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        let meta = match &mut self.container {
            Container::Pcap(parser) => next_pcap(&mut self.feed, parser, &mut self.count, &mut self.frame)?,
            Container::PcapNg(parser) => next_pcapng(&mut self.feed, parser, &mut self.count, &mut self.frame)?,
        };
        Ok(meta.map(|(ts, linktype, orig_len)| Record { ts, linktype, data: &self.frame, orig_len }))
    }

    /// Bytes the buffer holds now (for tests of the memory bound).
    #[cfg(test)]
    fn buffer_len(&self) -> usize {
        self.feed.buf.len()
    }
}

/// A record's timestamp, length and link type; its bytes go to `frame`.
type Meta = (Duration, u32, u32);

fn next_pcap<R: Read>(
    feed: &mut Feed<R>,
    parser: &PcapParser,
    count: &mut u64,
    frame: &mut Vec<u8>,
) -> Result<Option<Meta>, CaptureError> {
    if feed.at_end()? {
        return Ok(None);
    }
    let header = parser.header();
    let n = *count + 1;
    let at = feed.offset;
    feed.fill(PCAP_RECORD_HEADER)?;
    let have = feed.available().len();
    if have < PCAP_RECORD_HEADER {
        return Err(CaptureError::Truncated(format!(
            "record {n} (at byte {at}) has {have} of its {PCAP_RECORD_HEADER} header bytes"
        )));
    }
    // The guard: the captured length, checked before its bytes are read.
    let incl_len = u32_at(feed.available(), 8, header.endianness).unwrap_or(0);
    let claimed = usize::try_from(incl_len).unwrap_or(usize::MAX);
    if claimed > MAX_RECORD {
        return Err(CaptureError::Absurd(format!(
            "record {n} (at byte {at}) claims {incl_len} captured bytes; a capture record holds at most {MAX_RECORD}"
        )));
    }
    let total = PCAP_RECORD_HEADER + claimed;
    feed.fill(total)?;
    let have = feed.available().len();
    if have < total {
        return Err(CaptureError::Truncated(format!(
            "record {n} (at byte {at}) has {} of its {claimed} captured bytes",
            have - PCAP_RECORD_HEADER
        )));
    }
    let raw = match parser.next_raw_packet(&feed.available()[..total]) {
        Ok((_, raw)) => raw,
        Err(e) => return Err(invalid(format_args!("record {n} (at byte {at})"), e)),
    };
    // The fields are taken raw: pcap-file's checked conversion refuses an original length
    // above the snapshot length, which every `tcpdump -s N` capture has. Duration::new
    // carries an out-of-range fraction into the seconds, as libpcap's arithmetic does.
    let nanos = match header.ts_resolution {
        TsResolution::MicroSecond => u64::from(raw.ts_frac) * 1000,
        TsResolution::NanoSecond => u64::from(raw.ts_frac),
    };
    let ts = Duration::from_secs(u64::from(raw.ts_sec)) + Duration::from_nanos(nanos);
    frame.clear();
    frame.extend_from_slice(&raw.data);
    let orig_len = raw.orig_len;
    feed.consume(total);
    *count = n;
    Ok(Some((ts, u32::from(header.datalink) & LINKTYPE_MASK, orig_len)))
}

/// The length of the section header block at the start of the feed, checked, with the
/// whole block read. `n` counts the blocks before it.
fn section_header_len<R: Read>(feed: &mut Feed<R>, n: u64) -> Result<usize, CaptureError> {
    let at = feed.offset;
    let n = n + 1;
    feed.fill(BLOCK_OVERHEAD)?;
    let head = feed.available();
    if head.len() < BLOCK_OVERHEAD {
        return Err(CaptureError::Truncated(format!(
            "the pcapng section header (block {n}, at byte {at}) has {} of its first {BLOCK_OVERHEAD} bytes",
            head.len()
        )));
    }
    // The byte-order magic after the length word says how to read the length.
    let endianness = match u32_at(head, 8, Endianness::Big) {
        Some(0x1A2B_3C4D) => Endianness::Big,
        Some(0x4D3C_2B1A) => Endianness::Little,
        _ => {
            return Err(CaptureError::Invalid(format!(
                "the pcapng section header (block {n}, at byte {at}) has no byte-order magic"
            )));
        }
    };
    let len = u32_at(head, 4, endianness).unwrap_or(0);
    block_len(feed, len, n, at, "section header")
}

/// Checks a block's length field and reads the whole block.
fn block_len<R: Read>(feed: &mut Feed<R>, len: u32, n: u64, at: u64, what: &str) -> Result<usize, CaptureError> {
    // Named only when something is wrong: formatting it for every block cost a third
    // of reading a pcapng file.
    let block = || format!("pcapng block {n} ({what}, at byte {at})");
    let claimed = usize::try_from(len).unwrap_or(usize::MAX);
    if claimed % 4 != 0 {
        return Err(CaptureError::Invalid(format!("{} has length {len}, not a multiple of 4", block())));
    }
    if claimed < BLOCK_OVERHEAD + 4 {
        return Err(CaptureError::Invalid(format!("{} has length {len}, less than a block's header", block())));
    }
    if claimed > MAX_BLOCK {
        return Err(CaptureError::Absurd(format!(
            "{} claims {len} bytes; a capture block holds at most {MAX_BLOCK}",
            block()
        )));
    }
    feed.fill(claimed)?;
    let have = feed.available().len();
    if have < claimed {
        return Err(CaptureError::Truncated(format!("{} has {have} of its {len} bytes", block())));
    }
    Ok(claimed)
}

fn block_name(block_type: u32) -> &'static str {
    match block_type {
        1 => "interface description",
        2 => "packet",
        3 => "simple packet",
        4 => "name resolution",
        5 => "interface statistics",
        6 => "enhanced packet",
        PCAPNG_SHB => "section header",
        _ => "other",
    }
}

fn next_pcapng<R: Read>(
    feed: &mut Feed<R>,
    parser: &mut PcapNgParser,
    count: &mut u64,
    frame: &mut Vec<u8>,
) -> Result<Option<Meta>, CaptureError> {
    loop {
        if feed.at_end()? {
            return Ok(None);
        }
        let n = *count + 1;
        let at = feed.offset;
        feed.fill(8)?;
        let head = feed.available();
        if head.len() < 8 {
            return Err(CaptureError::Truncated(format!(
                "pcapng block {n} (at byte {at}) has {} of its first 8 bytes",
                head.len()
            )));
        }
        let endianness = parser.section().endianness;
        let block_type = u32_at(head, 0, endianness).unwrap_or(0);
        let what = block_name(block_type);
        let len = if block_type == PCAPNG_SHB {
            section_header_len(feed, *count)?
        } else {
            let len = u32_at(head, 4, endianness).unwrap_or(0);
            block_len(feed, len, n, at, what)?
        };
        let parsed = parser.next_block(&feed.available()[..len]);
        let block = match parsed {
            Ok((_, block)) => block,
            Err(e) => return Err(invalid(format_args!("pcapng block {n} ({what}, at byte {at})"), e)),
        };
        let meta = match block {
            Block::EnhancedPacket(epb) => {
                let iface = interface(parser, epb.interface_id, n, at)?;
                // pcap-file made a Duration of the raw 64-bit count as if in nanoseconds;
                // as_nanos gives that count back exactly, and the interface says its unit.
                let units = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                let ts = timestamp(iface, units, epb.interface_id)?;
                frame.clear();
                frame.extend_from_slice(&epb.data);
                Some((ts, u32::from(iface.linktype) & LINKTYPE_MASK, epb.original_len))
            }
            Block::Packet(pb) => {
                let id = u32::from(pb.interface_id);
                // The timestamp is two words, high first, each in the section's byte
                // order; pcap-file reads them as one u64, which swaps them when that
                // order is little-endian.
                let units = match endianness {
                    Endianness::Big => pb.timestamp,
                    Endianness::Little => pb.timestamp.rotate_left(32),
                };
                let iface = interface(parser, id, n, at)?;
                let ts = timestamp(iface, units, id)?;
                frame.clear();
                frame.extend_from_slice(&pb.data);
                Some((ts, u32::from(iface.linktype) & LINKTYPE_MASK, pb.original_len))
            }
            Block::SimplePacket(spb) => {
                // No timestamp (libpcap gives 0) and no captured length: the data runs to
                // the original length, or to the snapshot length, padding excluded.
                let iface = interface(parser, 0, n, at)?;
                let mut keep = usize::try_from(spb.original_len).unwrap_or(usize::MAX).min(spb.data.len());
                if iface.snaplen > 0 {
                    keep = keep.min(usize::try_from(iface.snaplen).unwrap_or(usize::MAX));
                }
                frame.clear();
                frame.extend_from_slice(&spb.data[..keep]);
                Some((Duration::ZERO, u32::from(iface.linktype) & LINKTYPE_MASK, spb.original_len))
            }
            // Section and interface descriptions are kept by the parser; statistics,
            // name resolution and the rest carry no frame.
            _ => None,
        };
        if meta.is_some() && frame.len() > MAX_RECORD {
            return Err(CaptureError::Absurd(format!(
                "pcapng block {n} ({what}, at byte {at}) holds {} captured bytes; a capture record holds at most {MAX_RECORD}",
                frame.len()
            )));
        }
        feed.consume(len);
        *count = n;
        if meta.is_some() {
            return Ok(meta);
        }
    }
}

fn interface(
    parser: &PcapNgParser,
    id: u32,
    n: u64,
    at: u64,
) -> Result<&InterfaceDescriptionBlock<'static>, CaptureError> {
    let known = parser.interfaces().len();
    usize::try_from(id).ok().and_then(|i| parser.interfaces().get(i)).ok_or_else(|| {
        CaptureError::Invalid(format!(
            "pcapng block {n} (at byte {at}) is a packet of interface {id}, but the section describes {known} interface{}",
            if known == 1 { "" } else { "s" }
        ))
    })
}

/// An interface's timestamp of `units` (its `if_tsresol`: 10^-N or 2^-N seconds,
/// microseconds by default), plus its `if_tsoffset` in seconds.
fn timestamp(iface: &InterfaceDescriptionBlock<'_>, units: u64, id: u32) -> Result<Duration, CaptureError> {
    let mut resolution = 6;
    let mut offset: i64 = 0;
    for option in &iface.options {
        match option {
            InterfaceDescriptionOption::IfTsResol(r) => resolution = *r,
            // pcapng's if_tsoffset is a signed count of seconds; pcap-file reads it unsigned.
            InterfaceDescriptionOption::IfTsOffset(o) => offset = *o as i64,
            _ => {}
        }
    }
    let exponent = u32::from(resolution & 0x7f);
    let per_second = if resolution & 0x80 == 0 { 10u64.checked_pow(exponent) } else { 1u64.checked_shl(exponent) };
    let Some(per_second) = per_second.filter(|&p| p > 0) else {
        return Err(CaptureError::Invalid(format!(
            "interface {id} has timestamp resolution {resolution:#04x} (if_tsresol), finer than any clock"
        )));
    };
    let secs = units / per_second;
    let frac = u128::from(units % per_second) * 1_000_000_000 / u128::from(per_second);
    let secs = secs.checked_add_signed(offset).unwrap_or(0);
    Ok(Duration::new(secs, u32::try_from(frac).unwrap_or(999_999_999)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<(Duration, u32, Vec<u8>)>, CaptureError> {
        let mut reader = CaptureReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(r) = reader.next_record()? {
            out.push((r.ts, r.linktype, r.data.to_vec()));
        }
        Ok(out)
    }

    fn pcap_header(magic: u32, big: bool, snaplen: u32, linktype: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let w32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        out.extend(w32(magic));
        out.extend(w16(2));
        out.extend(w16(4));
        out.extend(w32(0));
        out.extend(w32(0));
        out.extend(w32(snaplen));
        out.extend(w32(linktype));
        out
    }

    fn pcap_record(big: bool, sec: u32, frac: u32, data: &[u8], orig: u32) -> Vec<u8> {
        let w32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut out = Vec::new();
        out.extend(w32(sec));
        out.extend(w32(frac));
        out.extend(w32(data.len() as u32));
        out.extend(w32(orig));
        out.extend(data);
        out
    }

    #[test]
    fn pcap_in_all_four_magics_reads_the_same() {
        for (magic, big, frac) in [
            (0xA1B2_C3D4, false, 250_000),
            (0xA1B2_C3D4, true, 250_000),
            (0xA1B2_3C4D, false, 250_000_000),
            (0xA1B2_3C4D, true, 250_000_000),
        ] {
            let mut file = pcap_header(magic, big, 65535, 101);
            file.extend(pcap_record(big, 1_700_000_000, frac, &[0x45, 0, 0, 20], 20));
            let records = read_all(&file).unwrap();
            assert_eq!(records, vec![(Duration::new(1_700_000_000, 250_000_000), 101, vec![0x45, 0, 0, 20])]);
        }
    }

    #[test]
    fn original_length_above_the_snapshot_length_is_a_normal_capture() {
        let mut file = pcap_header(0xA1B2_C3D4, false, 4, 101);
        file.extend(pcap_record(false, 1, 0, &[0x45, 0, 0, 40], 40));
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        let record = reader.next_record().unwrap().unwrap();
        assert_eq!(record.orig_len, 40);
        assert_eq!(record.data.len(), 4);
    }

    #[test]
    fn a_lying_record_length_is_refused_before_it_is_read() {
        let mut file = pcap_header(0xA1B2_C3D4, false, 65535, 101);
        file.extend(pcap_record(false, 1, 0, &[0x45; 20], 20));
        let mut lie = pcap_record(false, 2, 0, &[0x45; 20], 20);
        lie[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        file.extend(lie);
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        assert!(reader.next_record().unwrap().is_some());
        let err = reader.next_record().unwrap_err();
        assert!(matches!(err, CaptureError::Absurd(_)), "{err}");
        assert!(err.to_string().contains("record 2 (at byte 60) claims 4294967280"), "{err}");
        assert!(reader.buffer_len() <= MAX_BLOCK);
    }

    #[test]
    fn the_buffer_stays_bounded_on_a_large_pcapng_block_claim() {
        // A section header, then a block claiming 2 GiB, followed by 1 MiB of bytes.
        let mut file = Vec::new();
        file.extend(PCAPNG_SHB.to_le_bytes());
        file.extend(28u32.to_le_bytes());
        file.extend(0x1A2B_3C4Du32.to_le_bytes());
        file.extend([1, 0, 0, 0]);
        file.extend((-1i64).to_le_bytes());
        file.extend(28u32.to_le_bytes());
        file.extend(6u32.to_le_bytes());
        file.extend(0x7FFF_FFF0u32.to_le_bytes());
        file.extend(vec![0u8; 1 << 20]);
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        assert_eq!(reader.format(), Format::PcapNg);
        let err = reader.next_record().unwrap_err();
        assert!(matches!(err, CaptureError::Absurd(_)), "{err}");
        assert!(reader.buffer_len() <= MAX_BLOCK, "{}", reader.buffer_len());
    }

    #[test]
    fn starts_that_are_not_captures() {
        assert!(matches!(CaptureReader::new(&[][..]), Err(CaptureError::Empty)));
        let err = CaptureReader::new(&b"GET / HTTP/1.1\r\n"[..]).err().unwrap();
        assert_eq!(err.to_string(), "not a pcap or pcapng file (it starts with 47 45 54 20)");
        let err = CaptureReader::new(&0xA1B2_C3D4u32.to_le_bytes()[..]).err().unwrap();
        assert!(err.to_string().contains("4 of its 24 bytes"), "{err}");
        let err = CaptureReader::new(&[0xd4][..]).err().unwrap();
        assert!(matches!(err, CaptureError::NotCapture { .. }), "{err}");
    }

    #[test]
    fn absurd_snapshot_length() {
        let file = pcap_header(0xA1B2_C3D4, false, u32::MAX, 1);
        let err = CaptureReader::new(&file[..]).err().unwrap();
        assert!(err.to_string().contains("snapshot length 4294967295 is absurd"), "{err}");
    }

    #[test]
    fn tsresol_units() {
        let iface = |opts: Vec<InterfaceDescriptionOption<'static>>| InterfaceDescriptionBlock {
            linktype: pcap_file::DataLink::RAW,
            snaplen: 0,
            options: opts,
        };
        let t = |r: Option<u8>, units: u64| {
            let opts = r.map(|r| vec![InterfaceDescriptionOption::IfTsResol(r)]).unwrap_or_default();
            timestamp(&iface(opts), units, 0)
        };
        assert_eq!(t(None, 1_500_000).unwrap(), Duration::from_millis(1500));
        assert_eq!(t(Some(9), 1_500_000_000).unwrap(), Duration::from_millis(1500));
        assert_eq!(t(Some(3), 1500).unwrap(), Duration::from_millis(1500));
        assert_eq!(t(Some(0x80 | 10), 1536).unwrap(), Duration::from_millis(1500));
        assert!(t(Some(20), 1).is_err());
        assert!(t(Some(0x80 | 64), 1).is_err());
        let offset = iface(vec![InterfaceDescriptionOption::IfTsOffset(100)]);
        assert_eq!(timestamp(&offset, 1_000_000, 0).unwrap(), Duration::from_secs(101));
    }

    /// Every prefix and many single-byte corruptions of a small pcap and pcapng read to
    /// an end or an error, never a panic.
    #[test]
    fn no_panic_on_damaged_input() {
        let mut pcap = pcap_header(0xA1B2_C3D4, false, 65535, 1);
        for i in 0..3u8 {
            pcap.extend(pcap_record(false, 1, 0, &[i; 60], 60));
        }
        let ng = minimal_pcapng();
        for file in [pcap, ng] {
            for cut in 0..file.len() {
                let _ = read_all(&file[..cut]);
            }
            for at in 0..file.len() {
                for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                    let mut bad = file.clone();
                    bad[at] = value;
                    let _ = read_all(&bad);
                }
            }
        }
    }

    fn minimal_pcapng() -> Vec<u8> {
        fn block(out: &mut Vec<u8>, btype: u32, body: &[u8]) {
            let len = 12 + body.len() as u32;
            out.extend(btype.to_le_bytes());
            out.extend(len.to_le_bytes());
            out.extend(body);
            out.extend(len.to_le_bytes());
        }
        let mut out = Vec::new();
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend([1, 0, 0, 0]);
        shb.extend((-1i64).to_le_bytes());
        block(&mut out, PCAPNG_SHB, &shb);
        // An interface (raw IP) with if_tsresol 9 and end of options.
        block(&mut out, 1, &[101, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        let mut epb = Vec::new();
        epb.extend(0u32.to_le_bytes());
        epb.extend(0u32.to_le_bytes());
        epb.extend(1_500_000_000u32.to_le_bytes());
        epb.extend(20u32.to_le_bytes());
        epb.extend(20u32.to_le_bytes());
        epb.extend([0x45; 20]);
        block(&mut out, 6, &epb);
        // A name resolution block: one IPv4 record, then the end record.
        let mut nrb = vec![1, 0, 6, 0, 10, 0, 0, 1, b'a', 0, 0, 0];
        nrb.extend([0, 0, 0, 0]);
        block(&mut out, 4, &nrb);
        block(&mut out, 3, &[20, 0, 0, 0, 0x45, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out
    }

    #[test]
    fn pcapng_interfaces_and_resolutions() {
        let records = read_all(&minimal_pcapng()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0, Duration::from_millis(1500));
        assert_eq!(records[0].1, 101);
        assert_eq!(records[1].0, Duration::ZERO);
        assert_eq!(records[1].2.len(), 20);
    }

    #[test]
    fn decode_counts_missing_bytes_from_the_wire_length() {
        // An IPv4 header saying 60 bytes, captured 20 of 60.
        let mut ip = vec![0x45, 0, 0, 60, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let record = Record { ts: Duration::ZERO, linktype: 101, data: &ip, orig_len: 60 };
        assert_eq!(record.decode().ip().unwrap().missing, 0);
        ip[3] = 80; // the header claims 20 bytes more than were on the wire
        let record = Record { ts: Duration::ZERO, linktype: 101, data: &ip, orig_len: 60 };
        assert_eq!(record.decode().ip().unwrap().missing, 20);
    }
}
