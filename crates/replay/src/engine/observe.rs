//! Observations: how ustack's packets differ from the captured host's in what the replay
//! does not compare (options, windows, TTL, ...), for [`crate::differences`].

use crate::conversation::{Conversation, Packet};
use crate::differences::Observed;
use crate::packets::{Out, OutKind};
use ustack::observe::Side;
use ustack::packet::{TcpFlags, TcpOption};

use super::Engine;
use super::lines::option_names;

impl<'a> Engine<'a> {
    pub(super) fn note(&mut self, aspect: impl Into<String>, linux: String, ustack: String) {
        if linux != ustack {
            self.observed.push(Observed { aspect: aspect.into(), linux, ustack });
        }
    }

    /// The captured packet at `index` (an index of [`crate::script::Sent`]).
    pub(super) fn captured_at(&self, index: Option<usize>) -> Option<&'a Packet> {
        let conv: &'a Conversation = self.conv;
        conv.packets.get(index?)
    }

    /// The IP header's TTL (hop limit), DF bit (IPv4) and flow label (IPv6, set or not:
    /// Linux's labels are random).
    pub(super) fn observe_ip(&mut self, linux: &Packet, out: &Out) {
        let v6 = out.src.is_ipv6();
        let hop = if v6 { "hop limit" } else { "TTL" };
        self.note(hop, linux.hop_limit.to_string(), out.hop_limit.to_string());
        if v6 {
            let label = |l: u32| if l == 0 { "zero".to_string() } else { "set".to_string() };
            self.note("IPv6 flow label", label(linux.flow_label), label(out.flow_label));
        } else {
            let df = |d: bool| if d { "set".to_string() } else { "clear".to_string() };
            self.note("IPv4 DF", df(linux.dont_fragment), df(out.dont_fragment));
        }
    }

    pub(super) fn observe_syn(&mut self, f: usize, out: &Out, options: &[TcpOption], window: u16) {
        let what = if self.local == Side::Server { "SYN-ACK" } else { "SYN" };
        let Some(linux) = self.captured_at(self.sent_local(f).syn) else { return };
        let Some(seg) = linux.segment() else { return };
        let family = if out.src.is_ipv4() { "IPv4" } else { "IPv6" };
        // The options present, in order; their values are aspects of their own.
        self.note(format!("{what} options"), option_names(&seg.options), option_names(options));
        self.note(format!("{what} window ({family})"), seg.window.to_string(), window.to_string());
        let ws = |o: &[TcpOption]| {
            o.iter()
                .find_map(|o| if let TcpOption::WindowScale(s) = o { Some(s.to_string()) } else { None })
                .unwrap_or_else(|| "none".into())
        };
        self.note(format!("{what} window scale"), ws(&seg.options), ws(options));
        let mss = |o: &[TcpOption]| {
            o.iter()
                .find_map(|o| if let TcpOption::Mss(m) = o { Some(m.to_string()) } else { None })
                .unwrap_or_else(|| "none".into())
        };
        self.note(format!("{what} MSS ({family})"), mss(&seg.options), mss(options));
        self.observe_ip(linux, out);
    }

    pub(super) fn observe_rst(&mut self, f: usize, out: &Out, seq: u32, window: u16) {
        let Some(linux) = self.captured_at(self.sent_local(f).first.rst) else { return };
        let Some(seg) = linux.segment() else { return };
        let OutKind::Tcp { flags, .. } = &out.kind else { return };
        let form = |flags: TcpFlags, seq: u32, window: u16| format!("[{flags}] seq {seq} win {window}");
        // An answer to a SYN (no connection): its sequence number means something absolute.
        let (lseq, useq) = if self.sent_local(f).syn.is_none() { (seg.seq, seq) } else { (0, 0) };
        self.note("RST", form(seg.flags, lseq, seg.window), form(*flags, useq, window));
        self.observe_ip(linux, out);
    }

    pub(super) fn observe_data(&mut self, f: usize, out: &Out) {
        let Some(linux) = self.captured_at(self.sent_local(f).first.data) else { return };
        let Some(seg) = linux.segment() else { return };
        let OutKind::Tcp { options, .. } = &out.kind else { return };
        let ts = |t: bool| if t { "on" } else { "off" }.to_string();
        let has_ts = |o: &[TcpOption]| o.iter().any(|o| matches!(o, TcpOption::Timestamp { .. }));
        self.note("timestamps on data", ts(has_ts(&seg.options)), ts(has_ts(options)));
        self.observe_ip(linux, out);
    }

    pub(super) fn observe_datagram(&mut self, f: usize, out: &Out) {
        let Some(linux) = self.captured_at(self.sent_local(f).first.datagram) else { return };
        self.observe_ip(linux, out);
    }
}
