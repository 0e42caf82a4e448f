//! Sending the captured peer's packets: acknowledgments moved onto ustack's sequence
//! numbers, segments larger than the link cut into pieces, options and windows fitted to
//! what ustack agreed to, and the replayer's own ACKs when ustack's buffer is smaller.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use etherparse::TcpOptionElement;

use crate::conversation::{Body, Conversation, Packet, Proto, Segment};
use crate::packets::{self, TcpSpec};
use crate::script::preview;
use ustack::packet::{TcpFlags, TcpOption};

use super::{ClientStep, Engine, KEPT_DATAGRAMS};

impl<'a> Engine<'a> {
    pub(super) fn send_peer(&mut self, i: usize) -> ClientStep<()> {
        let conv: &'a Conversation = self.conv;
        let p = &conv.packets[i];
        match &p.body {
            Body::Tcp(seg) => self.send_segment(p, seg),
            Body::Udp { .. } => {
                let flow = &conv.flows[p.flow];
                let (src, dst) = (flow.addr(p.from), flow.addr(p.from.other()));
                let frame = packets::udp(src, dst, p.hop_limit, p.payload()).unwrap_or_default();
                let line =
                    format!("{} UDP len {} {}", self.dir(p.flow, p.from), p.payload().len(), preview(p.payload(), 24));
                self.transmit(&frame, line);
                Ok(())
            }
            Body::Unreachable { icmp_type, code, quote } => {
                let f = p.flow;
                if conv.flows[f].proto != Proto::Udp {
                    // Errors about TCP come from routers on the path, which a replay has not.
                    self.trace.replayed(format!("{} (an ICMP error about TCP: not replayed)", self.dir(f, p.from)));
                    return Ok(());
                }
                // Quote the datagram ustack sent, as the captured error quotes the captured
                // one: the datagrams the capture shows before the error, the last of them.
                let n = self.shown[f].datagrams.saturating_sub(1);
                let Some(frame) = self.wait_frame(f, n)? else {
                    return Ok(());
                };
                let flow = &conv.flows[f];
                // As many bytes as the captured error quoted, at least the IP and UDP
                // headers, at most what ustack sent.
                let ip_udp = if flow.server.is_ipv4() { 28 } else { 48 };
                let quote_len = quote.len().max(ip_udp).min(frame.len());
                let (src, dst) = (flow.addr(p.from).ip(), flow.addr(p.from.other()).ip());
                let icmp = packets::icmp_error(src, dst, p.hop_limit, *icmp_type, *code, &frame[..quote_len])
                    .unwrap_or_default();
                let line = format!("{} ICMP unreachable (type {icmp_type} code {code})", self.dir(f, p.from));
                self.transmit(&icmp, line);
                Ok(())
            }
        }
    }

    /// ustack's `n`-th datagram of flow `f`, waited for.
    pub(super) fn wait_frame(&mut self, f: usize, n: usize) -> ClientStep<Option<Vec<u8>>> {
        let since = Instant::now();
        loop {
            self.pump()?;
            if let Some(frame) = self.flows[f].frames.get(n) {
                return Ok(Some(frame.clone()));
            }
            if n >= KEPT_DATAGRAMS {
                return Ok(None);
            }
            if since.elapsed() >= self.opts.timeout {
                return Err(self
                    .differ(f, format!("ustack's {} sent no datagram for Linux's ICMP error to answer", self.who())));
            }
            self.pump_wait(Duration::from_millis(20))?;
        }
    }

    pub(super) fn send_segment(&mut self, p: &'a Packet, seg: &'a Segment) -> ClientStep<()> {
        let f = p.flow;
        let from = p.from;
        let conv: &'a Conversation = self.conv;
        let flow = &conv.flows[f];
        let (src, dst) = (flow.addr(from), flow.addr(from.other()));
        let peer_isn = self.sent_peer(f).isn;

        // The acknowledgment: what the captured peer acknowledged of the captured host's
        // sequence space, moved onto ustack's. ustack must have sent it first.
        let ack = if seg.flags.has(TcpFlags::ACK) {
            match self.sent_local(f).extent_of(seg.ack) {
                Some(need) => {
                    self.wait_for_extent(f, need)?;
                    let isn = self.flows[f].isn.unwrap_or(0);
                    Some(isn.wrapping_add(need as u32))
                }
                // The captured host never sent a SYN: nothing to move the number onto.
                None => Some(seg.ack),
            }
        } else {
            None
        };
        if let Some(a) = ack
            && let Some(isn) = self.flows[f].isn
        {
            let ext = u64::from(a.wrapping_sub(isn));
            self.flows[f].acked = self.flows[f].acked.max(ext);
        }

        // Segments larger than the link (the capture's offloads) go as MSS-sized pieces.
        let syn = u32::from(seg.flags.has(TcpFlags::SYN));
        let window = self.window_field(f, seg);
        let options = self.options(f, seg);
        let payload = p.payload();
        let opts_len: usize = options.iter().map(option_len).sum::<usize>().div_ceil(4) * 4;
        let ip_len = if src.is_ipv4() { 20 } else { 40 };
        let room = self.mtu.saturating_sub(ip_len + 20 + opts_len).max(1);
        let chunk = self.flows[f].mss.map_or(room, |m| usize::from(m).min(room)).max(1);
        let pieces = payload.len().div_ceil(chunk).max(1);
        for k in 0..pieces {
            let part = &payload[(k * chunk).min(payload.len())..((k + 1) * chunk).min(payload.len())];
            let first = k == 0;
            let last = k + 1 == pieces;
            let seq = if first { seg.seq } else { seg.seq.wrapping_add(syn).wrapping_add((k * chunk) as u32) };
            let mut flags = if first { seg.flags.0 & (TcpFlags::SYN | TcpFlags::RST) } else { 0 };
            if last {
                flags |= seg.flags.0 & (TcpFlags::FIN | TcpFlags::PSH);
            }
            let flags = TcpFlags(flags);
            let span = part.len() as u32 + u32::from(flags.has(TcpFlags::SYN)) + u32::from(flags.has(TcpFlags::FIN));
            let end_extent = peer_isn.map(|isn| u64::from(seq.wrapping_add(span).wrapping_sub(isn)));
            if !part.is_empty()
                && let Some(end) = end_extent
            {
                self.wait_for_window(f, end.saturating_sub(u64::from(flags.has(TcpFlags::FIN))))?;
            }
            let spec = TcpSpec {
                src,
                dst,
                hop_limit: p.hop_limit,
                seq,
                ack,
                flags,
                window,
                options: if first || !flags.has(TcpFlags::SYN) { options.clone() } else { Vec::new() },
                payload: part,
            };
            let Some(frame) = packets::tcp(&spec) else { continue };
            let mut line = self.describe_sent(f, from, &spec);
            if pieces > 1 {
                let _ = write!(line, " (piece {}/{pieces})", k + 1);
                self.counts.pieces += 1;
            }
            self.transmit(&frame, line);
            let fs = &mut self.flows[f];
            fs.peer_window = window;
            if let Some(end) = end_extent {
                fs.peer_extent = fs.peer_extent.max(end);
            }
        }
        Ok(())
    }

    /// A pure ACK of `extent` of ustack's space, from the replayer, beyond the capture.
    pub(super) fn synthetic_ack(&mut self, f: usize, extent: u64) {
        let Some(isn) = self.flows[f].isn else { return };
        let Some(peer_isn) = self.sent_peer(f).isn else { return };
        let flow = &self.conv.flows[f];
        let (src, dst) = (flow.addr(self.peer()), flow.addr(self.local));
        let seq = peer_isn.wrapping_add(self.flows[f].peer_extent as u32);
        let ack = isn.wrapping_add(extent as u32);
        let mut options = Vec::new();
        if let Some(ts) = self.timestamp_option(f, None) {
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::Noop);
            options.push(ts);
        }
        let spec = TcpSpec {
            src,
            dst,
            hop_limit: 64,
            seq,
            ack: Some(ack),
            flags: TcpFlags(0),
            window: self.flows[f].peer_window,
            options,
            payload: &[],
        };
        if let Some(frame) = packets::tcp(&spec) {
            let line = format!("{} (the replayer's own ACK)", self.describe_sent(f, self.peer(), &spec));
            self.transmit(&frame, line);
            self.counts.synthetic_acks += 1;
            self.flows[f].acked = extent;
        }
    }

    /// The window field for a replayed segment: the captured window in bytes, encoded
    /// for the scaling ustack agreed to (which may differ from the captured host's).
    pub(super) fn window_field(&self, f: usize, seg: &Segment) -> u16 {
        if seg.flags.has(TcpFlags::SYN) {
            return seg.window;
        }
        let peer_ws = self.peer_syn(f).and_then(Segment::window_scale);
        let local_ws = self.local_syn(f).and_then(Segment::window_scale);
        let captured_shift = if peer_ws.is_some() && local_ws.is_some() { peer_ws.unwrap_or(0) } else { 0 };
        let bytes = u64::from(seg.window) << captured_shift.min(14);
        let shift = if peer_ws.is_some() && self.flows[f].wscale.is_some() { peer_ws.unwrap_or(0).min(14) } else { 0 };
        u16::try_from(bytes >> shift).unwrap_or(u16::MAX)
    }

    /// The captured peer's SYN (or SYN-ACK).
    pub(super) fn peer_syn(&self, f: usize) -> Option<&Segment> {
        self.sent_peer(f).syn.and_then(|i| self.conv.packets[i].segment())
    }

    /// The captured host's SYN (or SYN-ACK).
    pub(super) fn local_syn(&self, f: usize) -> Option<&Segment> {
        self.sent_local(f).syn.and_then(|i| self.conv.packets[i].segment())
    }

    /// The options of a replayed segment: a SYN's as captured, less what ustack's SYN did
    /// not offer when answering it (a SYN-ACK may only agree to what was offered); later
    /// segments keep timestamps and SACK blocks only where ustack agreed to them.
    pub(super) fn options(&self, f: usize, seg: &Segment) -> Vec<TcpOptionElement> {
        let fs = &self.flows[f];
        let answering = seg.flags.has(TcpFlags::SYN) && seg.flags.has(TcpFlags::ACK);
        let mut out = Vec::new();
        for o in &seg.options {
            match o {
                TcpOption::Nop if seg.flags.has(TcpFlags::SYN) => out.push(TcpOptionElement::Noop),
                TcpOption::Mss(m) if seg.flags.has(TcpFlags::SYN) => out.push(TcpOptionElement::MaximumSegmentSize(*m)),
                TcpOption::WindowScale(s) if seg.flags.has(TcpFlags::SYN) && (!answering || fs.wscale.is_some()) => {
                    out.push(TcpOptionElement::WindowScale(*s))
                }
                TcpOption::SackPermitted if seg.flags.has(TcpFlags::SYN) && (!answering || fs.sack) => {
                    out.push(TcpOptionElement::SelectiveAcknowledgementPermitted)
                }
                TcpOption::Timestamp { val, ecr } => {
                    if seg.flags.has(TcpFlags::SYN) && !answering {
                        out.push(TcpOptionElement::Timestamp(*val, *ecr));
                    } else if let Some(ts) = self.timestamp_option(f, Some(*val)) {
                        if !seg.flags.has(TcpFlags::SYN) {
                            out.push(TcpOptionElement::Noop);
                            out.push(TcpOptionElement::Noop);
                        }
                        out.push(ts);
                    }
                }
                TcpOption::Sack(blocks)
                    if !seg.flags.has(TcpFlags::SYN)
                        && fs.sack
                        && self.peer_syn(f).is_some_and(Segment::sack_permitted) =>
                {
                    // SACK blocks name the captured host's numbers: move them onto ustack's.
                    let local = self.sent_local(f);
                    let moved: Vec<(u32, u32)> = blocks
                        .iter()
                        .filter_map(|&(l, r)| {
                            let isn = fs.isn?;
                            Some((
                                isn.wrapping_add(local.extent_of(l)? as u32),
                                isn.wrapping_add(local.extent_of(r)? as u32),
                            ))
                        })
                        .take(3)
                        .collect();
                    if let Some(&first) = moved.first() {
                        out.push(TcpOptionElement::Noop);
                        out.push(TcpOptionElement::Noop);
                        out.push(TcpOptionElement::SelectiveAcknowledgement(
                            first,
                            [moved.get(1).copied(), moved.get(2).copied(), None],
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The timestamps option for a replayed segment, when ustack agreed to timestamps:
    /// the captured TSval, and ustack's latest TSval echoed.
    pub(super) fn timestamp_option(&self, f: usize, val: Option<u32>) -> Option<TcpOptionElement> {
        let fs = &self.flows[f];
        let peer_ts = self.peer_syn(f).and_then(Segment::timestamp);
        let ustack_ts = fs.tsval?;
        peer_ts?;
        Some(TcpOptionElement::Timestamp(val.unwrap_or(ustack_ts), ustack_ts))
    }

    pub(super) fn transmit(&mut self, frame: &[u8], line: String) {
        if frame.is_empty() {
            return;
        }
        self.wire.send_raw(frame);
        self.counts.sent += 1;
        self.trace.replayed(line);
    }
}

fn option_len(o: &TcpOptionElement) -> usize {
    match o {
        TcpOptionElement::Noop => 1,
        TcpOptionElement::MaximumSegmentSize(_) => 4,
        TcpOptionElement::WindowScale(_) => 3,
        TcpOptionElement::SelectiveAcknowledgementPermitted => 2,
        TcpOptionElement::SelectiveAcknowledgement(_, rest) => 10 + 8 * rest.iter().flatten().count(),
        TcpOptionElement::Timestamp(..) => 10,
    }
}
