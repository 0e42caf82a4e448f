//! What ustack sends: each packet read as it arrives, put to its conversation, and held
//! to the captured host's flags, acknowledgments and byte stream at once.

use std::net::SocketAddr;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::conversation::{Body, Proto, Segment};
use crate::packets::{self, Out, OutKind};
use crate::report::Difference;
use crate::script::preview;
use ustack::device::Link;
use ustack::packet::{TcpFlags, TcpOption};

use super::lines::{describe, option_kinds};
use super::{ClientStep, Engine, KEPT_DATAGRAMS, PING_ID, extent_words};

impl<'a> Engine<'a> {
    /// Takes every frame ustack has sent so far; fails at the first difference in them.
    pub(super) fn pump(&mut self) -> ClientStep<()> {
        while let Some(frame) = self.wire.recv_raw() {
            self.on_frame(&frame);
            if let Some(d) = self.failure.take() {
                return Err(d);
            }
        }
        if let Some(stack) = &self.stack
            && let Some(why) = stack.error()
        {
            return Err(Difference { flow: None, record: self.record, what: format!("ustack's stack stopped: {why}") });
        }
        Ok(())
    }

    /// Waits up to `timeout` for a frame from ustack, then takes what arrived.
    pub(super) fn pump_wait(&mut self, timeout: Duration) -> ClientStep<()> {
        self.pump()?;
        let millis = timeout.as_millis().clamp(1, 1000) as u16;
        let mut fds = [PollFd::new(self.wire.wait_fd(), PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(millis));
        self.pump()
    }

    pub(super) fn flow_of(&self, src: SocketAddr, dst: SocketAddr, proto: Proto) -> Option<usize> {
        self.by_tuple.get(&(proto, src, dst)).copied()
    }

    pub(super) fn on_frame(&mut self, frame: &[u8]) {
        use ustack::engine::reassembly::Offer;
        // A datagram ustack sent in fragments is looked at once whole.
        let now = smoltcp::time::Instant::now();
        let whole = match self.fragments.offer(now, frame) {
            Offer::NotFragment => None,
            Offer::Whole(datagram) => Some(datagram),
            Offer::Held { .. } => return,
        };
        let out = packets::parse(whole.as_deref().unwrap_or(frame));
        match &out.kind {
            OutKind::EchoReply { id, seq } if *id == PING_ID => self.pong = Some(*seq),
            OutKind::Tcp { .. } | OutKind::Udp { .. } => {
                let proto = if matches!(out.kind, OutKind::Tcp { .. }) { Proto::Tcp } else { Proto::Udp };
                match self.flow_of(out.src, out.dst, proto) {
                    Some(f) => {
                        self.counts.received += 1;
                        if proto == Proto::Tcp {
                            self.on_tcp(f, &out);
                        } else {
                            self.on_udp(f, &out);
                        }
                    }
                    None => self.unexpected(&out),
                }
            }
            OutKind::Unreachable { about, protocol, .. } => {
                let proto = if *protocol == 6 { Proto::Tcp } else { Proto::Udp };
                match self.flow_of(about.1, about.0, proto) {
                    Some(f) => {
                        self.counts.received += 1;
                        self.on_unreachable(f, &out);
                    }
                    None => self.unexpected(&out),
                }
            }
            OutKind::EchoReply { .. } | OutKind::Other(_) => self.unexpected(&out),
        }
    }

    pub(super) fn unexpected(&mut self, out: &Out) {
        let what = match &out.kind {
            OutKind::Tcp { flags, .. } => format!("TCP [{flags}] {} > {}", out.src, out.dst),
            OutKind::Udp { payload } => format!("UDP {} > {} ({} bytes)", out.src, out.dst, payload.len()),
            OutKind::Unreachable { about, .. } => format!("ICMP unreachable about {} > {}", about.0, about.1),
            OutKind::EchoReply { .. } => "an echo reply".to_string(),
            OutKind::Other(what) => what.clone(),
        };
        self.trace.replayed(format!("?? {what}"));
        self.failure.get_or_insert(Difference {
            flow: None,
            record: self.record,
            what: format!("ustack sent a packet that belongs to no replayed conversation: {what}"),
        });
    }

    pub(super) fn on_tcp(&mut self, f: usize, out: &Out) {
        let OutKind::Tcp { flags, seq, ack, window, options, payload } = &out.kind else { return };
        let (flags, seq, ack, window) = (*flags, *seq, *ack, *window);
        let syn = flags.has(TcpFlags::SYN);
        let peer_isn = self.sent_peer(f).isn;
        let line = {
            let fs = &self.flows[f];
            let isn = if syn { Some(seq) } else { fs.isn };
            let rel_seq = isn.map_or(seq, |i| seq.wrapping_sub(i));
            let rel_ack = flags.has(TcpFlags::ACK).then(|| peer_isn.map_or(ack, |i| ack.wrapping_sub(i)));
            let options = if syn { option_kinds(options) } else { String::new() };
            describe(self.dir(f, self.local), flags, rel_seq, rel_ack, payload.len(), &options)
        };
        self.trace.replayed(line);

        if syn {
            if self.flows[f].isn.is_none() {
                self.observe_syn(f, out, options, window);
                let fs = &mut self.flows[f];
                fs.isn = Some(seq);
                fs.mss = options.iter().find_map(|o| if let TcpOption::Mss(m) = o { Some(*m) } else { None });
                fs.wscale =
                    options.iter().find_map(|o| if let TcpOption::WindowScale(s) = o { Some(*s) } else { None });
                fs.sack = options.iter().any(|o| matches!(o, TcpOption::SackPermitted));
            }
            self.flows[f].syn = true;
            if !self.shown[f].syn {
                self.suspect.insert(f);
            }
        }
        if let Some(TcpOption::Timestamp { val, .. }) =
            options.iter().find(|o| matches!(o, TcpOption::Timestamp { .. }))
        {
            self.flows[f].tsval = Some(*val);
        }
        if flags.has(TcpFlags::RST) {
            if !self.flows[f].rst {
                self.observe_rst(f, out, seq, window);
            }
            self.flows[f].rst = true;
            if !self.shown[f].rst {
                self.suspect.insert(f);
            }
            if !self.sent_local(f).rst {
                self.failure.get_or_insert(
                    self.differ(f, format!("ustack's {} reset the connection (RST); Linux never did", self.who())),
                );
            }
        }
        // Its acknowledgment: never of what the peer has not sent; and its window, which
        // the replayer keeps to.
        if flags.has(TcpFlags::ACK)
            && let Some(isn) = peer_isn
        {
            let ext = u64::from(ack.wrapping_sub(isn));
            let (sent, who) = (self.flows[f].peer_extent, self.who());
            if ext > sent {
                let peer = self.sent_peer(f);
                let (acked, sent) = (extent_words(ext, peer), extent_words(sent, peer));
                let what = format!("ustack's {who} acknowledged {acked}, but the peer has only sent {sent}");
                self.failure.get_or_insert(self.differ(f, what));
            }
            let scaled = match self.flows[f].wscale {
                // A SYN's window is never scaled; later ones are when both sides agreed.
                Some(shift) if !syn && self.peer_syn(f).and_then(Segment::window_scale).is_some() => {
                    u64::from(window) << shift.min(14)
                }
                _ => u64::from(window),
            };
            let fs = &mut self.flows[f];
            fs.ack = fs.ack.max(ext);
            if !flags.has(TcpFlags::RST) {
                let edge = ext + scaled;
                fs.right_edge = Some(fs.right_edge.map_or(edge, |e| e.max(edge)));
            }
        }
        let Some(isn) = self.flows[f].isn else { return };
        let start = u64::from(seq.wrapping_add(u32::from(syn)).wrapping_sub(isn.wrapping_add(1)));
        if start >= 1 << 31 {
            return;
        }
        if !payload.is_empty() {
            self.on_data(f, out, start, payload);
        }
        if flags.has(TcpFlags::FIN) {
            let at = start + payload.len() as u64;
            let captured = self.sent_local(f).fin;
            let who = self.who();
            match captured {
                None => {
                    self.failure.get_or_insert(self.differ(
                        f,
                        format!("ustack's {who} closed (FIN) after {at} bytes; the captured {who} never did"),
                    ));
                }
                Some(c) if c != at => {
                    self.failure.get_or_insert(self.differ(
                        f,
                        format!("ustack's {who} closed (FIN) after {at} bytes; the captured {who} after {c}"),
                    ));
                }
                _ => {}
            }
            self.flows[f].fin.get_or_insert(at);
        }
    }

    pub(super) fn on_data(&mut self, f: usize, out: &Out, start: u64, payload: &[u8]) {
        let end = start + payload.len() as u64;
        let stream = &self.sent_local(f).stream;
        let who = self.who();
        if !self.flows[f].observed_data {
            self.flows[f].observed_data = true;
            self.observe_data(f, out);
        }
        let known = (stream.len() as u64).min(end);
        let have = stream.get(start.min(known) as usize..known as usize).unwrap_or(&[]);
        if let Some(k) = have.iter().zip(payload).position(|(a, b)| a != b) {
            let at = start + k as u64;
            self.failure.get_or_insert(self.differ(
                f,
                format!(
                    "the {who}'s byte stream differs at byte {}: Linux sent {}, ustack {}",
                    at + 1,
                    preview(&stream[at as usize..], 32),
                    preview(&payload[k..], 32)
                ),
            ));
        } else if end > stream.len() as u64 {
            let extra = &payload[(stream.len() as u64).saturating_sub(start) as usize..];
            self.failure.get_or_insert(self.differ(
                f,
                format!(
                    "ustack's {who} sent more than the captured one: Linux sent {} bytes in all, ustack sent {} from byte {} on",
                    stream.len(),
                    preview(extra, 32),
                    stream.len().max(start as usize) + 1
                ),
            ));
        }
        let fs = &mut self.flows[f];
        // Extents count ustack's SYN: data up to `end` is acknowledged at extent `end + 1`.
        fs.resent_acked |= fs.acked >= 1 && end < fs.acked;
        fs.sent.insert(start, end);
    }

    pub(super) fn on_udp(&mut self, f: usize, out: &Out) {
        let OutKind::Udp { payload } = &out.kind else { return };
        let n = self.flows[f].datagrams;
        let line = format!("{} UDP len {} {}", self.dir(f, self.local), payload.len(), preview(payload, 24));
        self.trace.replayed(line);
        if n == 0 {
            self.observe_datagram(f, out);
        }
        let who = self.who();
        match self.sent_local(f).datagrams.get(n) {
            None => {
                self.failure.get_or_insert(self.differ(
                    f,
                    format!(
                        "ustack's {who} sent datagram {} ({}); the captured {who} sent only {n}",
                        n + 1,
                        preview(payload, 32)
                    ),
                ));
            }
            Some(d) if d != payload => {
                self.failure.get_or_insert(self.differ(
                    f,
                    format!(
                        "datagram {} of the {who} differs: Linux sent {}, ustack {}",
                        n + 1,
                        preview(d, 32),
                        preview(payload, 32)
                    ),
                ));
            }
            _ => {}
        }
        let fs = &mut self.flows[f];
        fs.datagrams += 1;
        if fs.frames.len() < KEPT_DATAGRAMS {
            fs.frames.push(out.bytes.clone());
        }
    }

    pub(super) fn on_unreachable(&mut self, f: usize, out: &Out) {
        let OutKind::Unreachable { icmp_type, code, quote_len, .. } = &out.kind else { return };
        let line = format!("{} ICMP unreachable (type {icmp_type} code {code})", self.dir(f, self.local));
        self.trace.replayed(line);
        let n = self.flows[f].unreachables;
        let captured = self.sent_local(f).unreachables.get(n).copied();
        match captured {
            None => {
                self.failure.get_or_insert(self.differ(
                    f,
                    format!("ustack answered with ICMP unreachable (type {icmp_type} code {code}); Linux did not"),
                ));
            }
            Some((t, c)) if (t, c) != (*icmp_type, *code) => {
                self.failure.get_or_insert(self.differ(
                    f,
                    format!("ustack's ICMP error is type {icmp_type} code {code}; Linux's type {t} code {c}"),
                ));
            }
            _ => {}
        }
        if n == 0 {
            let linux = match self.captured_at(self.sent_local(f).first.unreachable).map(|p| &p.body) {
                Some(Body::Unreachable { quote, .. }) => Some(quote.len()),
                _ => None,
            };
            if let Some(l) = linux {
                self.note("ICMP error's quote", format!("{l} bytes"), format!("{quote_len} bytes"));
            }
        }
        self.flows[f].unreachables += 1;
    }
}
