//! What ustack must have done by each step: what the captured host had done (waited
//! for), what it must not have done yet (a SYN-ACK or RST ahead of the capture), and at
//! the end what its programs read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::conversation::{Body, Proto};
use crate::script::preview;
use ustack::observe::Side;
use ustack::packet::TcpFlags;

use super::{ClientStep, Engine, extent_words, secs};

impl<'a> Engine<'a> {
    /// Waits until ustack has done what the capture shows its host had done by now (at the
    /// end: everything). Data is only waited for when the next packet acknowledges it.
    pub(super) fn settle(&mut self, end: bool) -> ClientStep<()> {
        let mut last_progress = Instant::now();
        let mut last = self.progress_mark();
        loop {
            self.pump()?;
            let Some((f, what)) = self.missing(end) else { return Ok(()) };
            self.resend_when_due(f, last_progress);
            let mark = self.progress_mark();
            if mark != last {
                last = mark;
                last_progress = Instant::now();
            }
            if last_progress.elapsed() >= self.opts.timeout || Instant::now() >= self.deadline {
                return Err(self.differ(f, format!("{what} (waited {})", secs(self.opts.timeout))));
            }
            self.pump_wait(Duration::from_millis(20))?;
        }
    }

    /// Something that changes whenever ustack sends anything new, or its programs read.
    pub(super) fn progress_mark(&self) -> u64 {
        self.counts.received + self.reads.total() as u64
    }

    /// The first thing the captured host had done by now and ustack has not.
    pub(super) fn missing(&mut self, end: bool) -> Option<(usize, String)> {
        let flows: Vec<usize> = if end { self.selected.clone() } else { self.dirty.iter().copied().collect() };
        for f in flows {
            match self.flow_missing(f, end) {
                Some(what) => return Some((f, what)),
                // ustack's state only grows: caught up now, it stays so until the capture
                // shows more.
                None => {
                    self.dirty.remove(&f);
                }
            }
        }
        None
    }

    /// What the captured host had done by now in conversation `f` and ustack has not.
    pub(super) fn flow_missing(&self, f: usize, end: bool) -> Option<String> {
        let (shown, fs) = (&self.shown[f], &self.flows[f]);
        let sent = self.sent_local(f);
        let who = self.who();
        if shown.syn && !fs.syn {
            let what = if self.local == Side::Server { "answered the SYN with SYN-ACK" } else { "sent its SYN" };
            return Some(format!("the captured {who} {what}; ustack's has not"));
        }
        if shown.rst && !fs.rst {
            return Some(format!("the captured {who} sent a RST; ustack's has not"));
        }
        let data_due = if end { sent.stream.len() as u64 } else { 0 };
        if fs.data() < data_due {
            return Some(self.data_missing(f, data_due));
        }
        let fin_at = sent.fin.unwrap_or(0);
        if shown.fin && fs.fin.is_none() && (end || fs.data() >= fin_at) {
            return Some(format!("the captured {who} closed (FIN) after {fin_at} bytes; ustack's has not"));
        }
        if fs.ack < shown.ack {
            let peer = self.sent_peer(f);
            let (linux, ustack) = (extent_words(shown.ack, peer), extent_words(fs.ack, peer));
            return Some(format!("the captured {who} acknowledged {linux}; ustack's only {ustack}"));
        }
        if fs.datagrams < shown.datagrams {
            let next = sent.datagrams.get(fs.datagrams).map_or(String::new(), |d| preview(d, 40));
            let n = shown.datagrams;
            return Some(format!(
                "the captured {who} had sent {n} datagram{} by here; ustack's only {} (next: {next})",
                if n == 1 { "" } else { "s" },
                fs.datagrams
            ));
        }
        if end
            && let Some((due, have)) = self.read_due(f)
            && have < due
        {
            let what = if self.conv.flows[f].proto == Proto::Tcp { "bytes" } else { "datagrams" };
            let peer = if self.local == Side::Server { "client" } else { "server" };
            return Some(format!(
                "ustack's {who} application has read {have} of the {due} {what} the {peer} sent (and the captured {who} acknowledged)"
            ));
        }
        if fs.unreachables < shown.unreachables {
            let proto = self.conv.flows[f].proto;
            return Some(format!(
                "the captured {who} answered with ICMP port unreachable ({proto} to a closed port); ustack did not"
            ));
        }
        None
    }

    /// What ustack's program must have read in conversation `f` by the end, and what it
    /// has: the peer's bytes as far as the captured host acknowledged them (TCP), or the
    /// peer's datagrams (UDP). `None` where the captured host took no part.
    pub(super) fn read_due(&self, f: usize) -> Option<(usize, usize)> {
        let flow = &self.conv.flows[f];
        let key = (flow.proto, flow.addr(self.local), flow.addr(self.peer()));
        let peer = self.sent_peer(f);
        let mine = self.sent_local(f);
        let due = match flow.proto {
            Proto::Tcp => {
                mine.syn?;
                // The final acknowledgment's extent, less the SYN (and FIN, by the clip).
                let acked = self.shown[f].ack.saturating_sub(1);
                usize::try_from(acked).unwrap_or(usize::MAX).min(peer.stream.len())
            }
            Proto::Udp if mine.unreachables.is_empty() => peer.datagrams.len(),
            Proto::Udp => return None,
        };
        Some((due, self.reads.count(&key)))
    }

    /// At the end: what ustack's programs read is what the peer sent (the byte stream
    /// towards ustack).
    pub(super) fn check_reads(&self) -> ClientStep<()> {
        for &f in &self.selected {
            let flow = &self.conv.flows[f];
            let key = (flow.proto, flow.addr(self.local), flow.addr(self.peer()));
            let Some(read) = self.reads.get(&key) else { continue };
            let peer = self.sent_peer(f);
            let who = self.who();
            let from = if self.local == Side::Server { "client" } else { "server" };
            match flow.proto {
                Proto::Tcp => {
                    let sent = &peer.stream;
                    let k = read.bytes.iter().zip(sent).position(|(a, b)| a != b);
                    if let Some(k) = k {
                        return Err(self.differ(
                            f,
                            format!(
                                "ustack's {who} application read {} at byte {}, where the {from} sent {}",
                                preview(&read.bytes[k..], 32),
                                k + 1,
                                preview(&sent[k..], 32)
                            ),
                        ));
                    }
                    if read.more || read.bytes.len() > sent.len() {
                        return Err(self.differ(
                            f,
                            format!(
                                "ustack's {who} application read more than the {} bytes the {from} sent",
                                sent.len()
                            ),
                        ));
                    }
                }
                Proto::Udp => {
                    let k = read.datagrams.iter().zip(&peer.datagrams).position(|(a, b)| a != b);
                    if let Some(k) = k {
                        return Err(self.differ(
                            f,
                            format!(
                                "ustack's {who} application read datagram {} as {}; the {from} sent {}",
                                k + 1,
                                preview(&read.datagrams[k], 32),
                                preview(&peer.datagrams[k], 32)
                            ),
                        ));
                    }
                    if read.more || read.datagrams.len() > peer.datagrams.len() {
                        return Err(self.differ(
                            f,
                            format!("ustack's {who} application read more datagrams than the {from} sent"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn data_missing(&self, f: usize, due: u64) -> String {
        let fs = &self.flows[f];
        let sent = self.sent_local(f);
        let have = fs.data();
        let next = sent.stream.get(have as usize..due.min(sent.stream.len() as u64) as usize).unwrap_or(&[]);
        format!(
            "the captured {} had sent {due} bytes by here; ustack's only {have} (next: {})",
            self.who(),
            preview(next, 40)
        )
    }

    /// After a peer packet: ustack must not have done what the captured host only did
    /// later (answered a SYN it dropped; reset a connection).
    pub(super) fn check_ahead(&mut self, current: Option<usize>, next_peer: Option<usize>) -> ClientStep<()> {
        self.pump()?;
        if self.suspect.is_empty() {
            return Ok(());
        }
        // The captured host's SYN and RST up to the next peer packet (at the end: all),
        // for the conversations where ustack sent one the capture had not shown yet.
        let mut allowed: HashMap<usize, (bool, bool)> =
            self.suspect.iter().map(|&f| (f, (self.shown[f].syn, self.shown[f].rst))).collect();
        match current {
            Some(i) => {
                let end = next_peer.unwrap_or(self.conv.packets.len());
                for p in self.conv.packets.iter().take(end).skip(i + 1) {
                    if p.from == self.local
                        && let (Body::Tcp(seg), Some(a)) = (&p.body, allowed.get_mut(&p.flow))
                    {
                        a.0 |= seg.flags.has(TcpFlags::SYN);
                        a.1 |= seg.flags.has(TcpFlags::RST);
                    }
                }
            }
            None => {
                for (&f, a) in allowed.iter_mut() {
                    a.0 |= self.sent_local(f).syn.is_some();
                    a.1 |= self.sent_local(f).rst;
                }
            }
        }
        for (&f, &(syn, rst)) in &allowed {
            let fs = &self.flows[f];
            if fs.syn && !syn && self.local == Side::Server {
                let when = match next_peer {
                    Some(j) => format!(
                        "; Linux had not answered it when the client sent its next packet (record {})",
                        self.conv.packets[j].record
                    ),
                    None => String::new(),
                };
                return Err(self.differ(f, format!("ustack answered the client's SYN with SYN-ACK{when}")));
            }
            if fs.rst && !rst {
                return Err(
                    self.differ(f, format!("ustack's {} reset the connection (RST); Linux did not", self.who()))
                );
            }
        }
        // Those the capture has now shown need no more looking at.
        let shown = &self.shown;
        let flows = &self.flows;
        self.suspect.retain(|&f| (flows[f].syn && !shown[f].syn) || (flows[f].rst && !shown[f].rst));
        Ok(())
    }
}
