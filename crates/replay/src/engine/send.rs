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

use super::{ClientStep, Engine, KEPT_DATAGRAMS, RETRANSMISSIONS, RTO};

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
                    // Never less than the replayer acknowledged already (its own ACKs
                    // may have gone further than the capture's): a real peer's
                    // cumulative ACK does not go back, and an older one would read as a
                    // duplicate ACK, or an old one on data.
                    let isn = self.flows[f].isn.unwrap_or(0);
                    Some(isn.wrapping_add(need.max(self.flows[f].acked) as u32))
                }
                // The captured host never sent a SYN: nothing to move the number onto.
                None => Some(seg.ack),
            }
        } else {
            None
        };
        let mut acked_extent = None;
        if let Some(a) = ack
            && let Some(isn) = self.flows[f].isn
        {
            let ext = u64::from(a.wrapping_sub(isn));
            self.flows[f].acked = self.flows[f].acked.max(ext);
            acked_extent = Some(ext);
        }

        // Segments larger than the link (the capture's offloads) go as MSS-sized pieces.
        let syn = u32::from(seg.flags.has(TcpFlags::SYN));
        let window = match acked_extent {
            Some(ext) if !seg.flags.has(TcpFlags::SYN) => {
                let bytes = self.captured_window(f, seg);
                let fs = &mut self.flows[f];
                fs.peer_max_window = fs.peer_max_window.max(bytes);
                self.offer_window(f, ext, bytes)
            }
            // A SYN's window is never scaled.
            Some(ext) => {
                let fs = &mut self.flows[f];
                fs.peer_max_window = fs.peer_max_window.max(u64::from(seg.window));
                fs.peer_edge = fs.peer_edge.max(ext + u64::from(seg.window));
                seg.window
            }
            None => seg.window,
        };
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
            window: self.offer_window(f, extent, self.flows[f].peer_max_window),
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

    /// Resends what ustack has not acknowledged of the replayer's bytes (and FIN), as a
    /// real peer's retransmission timer would, once nothing has happened for [`RTO`]
    /// since `last_progress` and since its last resend; at most [`RETRANSMISSIONS`] times
    /// while ustack's acknowledgment stands still. A replayer that never resent would
    /// turn one segment ustack could not take (a window it advertised, then took back by
    /// rounding; a full buffer) into a false difference.
    pub(super) fn resend_when_due(&mut self, f: usize, last_progress: Instant) {
        let now = Instant::now();
        let fs = &mut self.flows[f];
        if fs.rst || fs.ack == 0 || fs.ack >= fs.peer_extent || now.duration_since(last_progress) < RTO {
            return;
        }
        match fs.retransmitted {
            Some((_, ack)) if ack != fs.ack => fs.retransmissions = 0,
            Some((at, _)) if now.duration_since(at) < RTO => return,
            _ => {}
        }
        if fs.retransmissions >= RETRANSMISSIONS {
            return;
        }
        fs.retransmissions += 1;
        fs.retransmitted = Some((now, fs.ack));
        self.resend(f);
    }

    /// Sends again the replayer's bytes from ustack's acknowledgment on, as far as it
    /// sent them and ustack's window takes them, in pieces of ustack's MSS; and its FIN,
    /// when that was sent and is not acknowledged.
    fn resend(&mut self, f: usize) {
        let conv: &'a Conversation = self.conv;
        let peer = self.sent_peer(f);
        let (Some(peer_isn), Some(isn)) = (peer.isn, self.flows[f].isn) else { return };
        let flow = &conv.flows[f];
        let (src, dst) = (flow.addr(self.peer()), flow.addr(self.local));
        let mut options = Vec::new();
        if let Some(ts) = self.timestamp_option(f, None) {
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::Noop);
            options.push(ts);
        }
        let ip_len = if src.is_ipv4() { 20 } else { 40 };
        let opts_len = if options.is_empty() { 0 } else { 12 };
        let room = self.mtu.saturating_sub(ip_len + 20 + opts_len).max(1);
        let chunk = self.flows[f].mss.map_or(room, |m| usize::from(m).min(room)).max(1) as u64;
        let acked = self.flows[f].acked;
        // Extents into the peer's space: byte k of its stream is extent k + 1.
        let (from, sent, edge) = {
            let fs = &self.flows[f];
            (fs.ack, fs.peer_extent, fs.right_edge.unwrap_or(0))
        };
        let stream_end = 1 + peer.stream.len() as u64;
        let data_end = sent.min(stream_end);
        let fin = sent > stream_end;
        let mut at = from;
        loop {
            let end = data_end.min(edge).min(at + chunk).max(at);
            let last_data = end >= data_end;
            let with_fin = fin && last_data;
            if end == at && !with_fin {
                break;
            }
            let payload = peer.stream.get((at - 1) as usize..(end - 1) as usize).unwrap_or(&[]);
            let mut flags = if with_fin { TcpFlags::FIN } else { 0 };
            if last_data && !payload.is_empty() {
                flags |= TcpFlags::PSH;
            }
            let spec = TcpSpec {
                src,
                dst,
                hop_limit: 64,
                seq: peer_isn.wrapping_add(at as u32),
                ack: Some(isn.wrapping_add(acked as u32)),
                flags: TcpFlags(flags),
                window: self.offer_window(f, acked, 0),
                options: options.clone(),
                payload,
            };
            if let Some(frame) = packets::tcp(&spec) {
                let line = format!("{} (resent: not acknowledged)", self.describe_sent(f, self.peer(), &spec));
                self.transmit(&frame, line);
                self.counts.retransmitted += 1;
            }
            if with_fin || end == at {
                break;
            }
            at = end;
        }
    }

    /// The window a captured segment (not a SYN) offered, in bytes.
    pub(super) fn captured_window(&self, f: usize, seg: &Segment) -> u64 {
        let peer_ws = self.peer_syn(f).and_then(Segment::window_scale);
        let local_ws = self.local_syn(f).and_then(Segment::window_scale);
        let captured_shift = if peer_ws.is_some() && local_ws.is_some() { peer_ws.unwrap_or(0) } else { 0 };
        u64::from(seg.window) << captured_shift.min(14)
    }

    /// The window field of a segment from the replayer acknowledging `acked` (an extent
    /// into ustack's space): `bytes`, or more where the replayer offered ustack more
    /// before (a window does not shrink), encoded for the scaling ustack agreed to (which
    /// may differ from the captured host's). Remembers the right edge offered.
    ///
    /// A replay offers ustack more than the capture shows once it has acknowledged more
    /// than the capture (its own ACKs, while it waits for ustack): the captured peer's
    /// window was closed only while its application had not read what the captured host
    /// sent by then, and the replayer's application reads everything at once. Keeping
    /// the captured zero window there would deadlock an echo whose buffers are smaller
    /// than Linux's: it cannot send, so it does not read, so it takes nothing more.
    pub(super) fn offer_window(&mut self, f: usize, acked: u64, bytes: u64) -> u16 {
        let peer_ws = self.peer_syn(f).and_then(Segment::window_scale);
        let shift = if peer_ws.is_some() && self.flows[f].wscale.is_some() { peer_ws.unwrap_or(0).min(14) } else { 0 };
        let fs = &mut self.flows[f];
        let bytes = bytes.max(fs.peer_edge.saturating_sub(acked));
        // Rounded up, so the edge offered is never short of the one promised before.
        let field = u16::try_from(bytes.div_ceil(1 << shift)).unwrap_or(u16::MAX);
        fs.peer_edge = fs.peer_edge.max(acked + (u64::from(field) << shift));
        field
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
