//! The compact packet lines of the side-by-side trace, with sequence numbers relative
//! to each side's ISN (the captured ones on the left, ustack's on the right).

use std::fmt::Write as _;

use etherparse::TcpOptionElement;

use crate::conversation::{Body, Packet};
use crate::packets::TcpSpec;
use crate::script::preview;
use ustack::observe::Side;
use ustack::packet::{TcpFlags, TcpOption};

use super::Engine;

impl<'a> Engine<'a> {
    pub(super) fn dir(&self, f: usize, from: Side) -> String {
        let tag = if self.selected.len() > 1 { format!("#{} ", self.conv.flows[f].id) } else { String::new() };
        match from {
            Side::Client => format!("{tag}C>S"),
            Side::Server => format!("{tag}S>C"),
        }
    }

    pub(super) fn describe_captured(&self, p: &Packet) -> String {
        let f = p.flow;
        let dir = self.dir(f, p.from);
        match &p.body {
            Body::Tcp(seg) => {
                let own = self.captured.sent(f, p.from).isn;
                let other = self.captured.sent(f, p.from.other()).isn;
                let seq = own.map_or(seg.seq, |i| seg.seq.wrapping_sub(i));
                let ack = seg.flags.has(TcpFlags::ACK).then(|| other.map_or(seg.ack, |i| seg.ack.wrapping_sub(i)));
                let options = if seg.flags.has(TcpFlags::SYN) { option_kinds(&seg.options) } else { String::new() };
                describe(dir, seg.flags, seq, ack, seg.len(), &options)
            }
            Body::Udp { .. } => format!("{dir} UDP len {} {}", p.payload().len(), preview(p.payload(), 24)),
            Body::Unreachable { icmp_type, code, .. } => {
                format!("{dir} ICMP unreachable (type {icmp_type} code {code})")
            }
        }
    }

    /// A packet the replayer sends for the captured peer (`from`): its own numbers are the
    /// captured peer's; its acknowledgments ustack's.
    pub(super) fn describe_sent(&self, f: usize, from: Side, spec: &TcpSpec<'_>) -> String {
        let own = self.captured.sent(f, from).isn;
        let rel_seq = own.map_or(spec.seq, |i| spec.seq.wrapping_sub(i));
        let rel_ack = spec.ack.map(|a| self.flows[f].isn.map_or(a, |i| a.wrapping_sub(i)));
        let flags = TcpFlags(spec.flags.0 | if spec.ack.is_some() { TcpFlags::ACK } else { 0 });
        let options = if flags.has(TcpFlags::SYN) { element_kinds(&spec.options) } else { String::new() };
        describe(self.dir(f, from), flags, rel_seq, rel_ack, spec.payload.len(), &options)
    }
}

/// A compact line: `C>S [P.] seq 1:15 ack 1 len 14`, with a SYN's options (`options`,
/// empty for none).
pub(super) fn describe(dir: String, flags: TcpFlags, seq: u32, ack: Option<u32>, len: usize, options: &str) -> String {
    let mut s = format!("{dir} [{flags}] seq {seq}");
    if len > 0 {
        let _ = write!(s, ":{}", seq.wrapping_add(len as u32));
    }
    if let Some(a) = ack {
        let _ = write!(s, " ack {a}");
    }
    if len > 0 {
        let _ = write!(s, " len {len}");
    }
    if !options.is_empty() {
        let _ = write!(s, " <{options}>");
    }
    s
}

/// Option names in order, as tcpdump names them (`mss 1460,sackOK,TS,nop,wscale 10`).
pub(super) fn option_kinds(options: &[TcpOption]) -> String {
    let names: Vec<String> = options
        .iter()
        .map(|o| match o {
            TcpOption::Eol => "eol".to_string(),
            TcpOption::Nop => "nop".to_string(),
            TcpOption::Mss(m) => format!("mss {m}"),
            TcpOption::WindowScale(s) => format!("wscale {s}"),
            TcpOption::SackPermitted => "sackOK".to_string(),
            TcpOption::Sack(_) => "sack".to_string(),
            TcpOption::Timestamp { .. } => "TS".to_string(),
            TcpOption::Unknown { kind, .. } => format!("opt-{kind}"),
            TcpOption::Malformed { kind, .. } => format!("bad-{kind}"),
        })
        .collect();
    if names.is_empty() { "none".to_string() } else { names.join(",") }
}

/// The names of options the replayer sends, as [`option_kinds`] names them.
pub(super) fn element_kinds(options: &[TcpOptionElement]) -> String {
    let names: Vec<String> = options
        .iter()
        .map(|o| match o {
            TcpOptionElement::Noop => "nop".to_string(),
            TcpOptionElement::MaximumSegmentSize(m) => format!("mss {m}"),
            TcpOptionElement::WindowScale(s) => format!("wscale {s}"),
            TcpOptionElement::SelectiveAcknowledgementPermitted => "sackOK".to_string(),
            TcpOptionElement::SelectiveAcknowledgement(..) => "sack".to_string(),
            TcpOptionElement::Timestamp(..) => "TS".to_string(),
        })
        .collect();
    if names.is_empty() { "none".to_string() } else { names.join(",") }
}

/// Option kinds in order, without values (`mss,sackOK,TS,nop,wscale`).
pub(super) fn option_names(options: &[TcpOption]) -> String {
    let kinds = option_kinds(options);
    let names: Vec<&str> = kinds.split(',').map(|o| o.split(' ').next().unwrap_or(o)).collect();
    names.join(",")
}
