//! Packets the demux builds itself: those of a SYN-cookie handshake — the SYN-ACK ustack
//! sends without keeping any state, and the SYN it replays into a fresh smoltcp socket when
//! the cookie comes back — and the challenge ACK and RST+ACK smoltcp would get wrong.
//!
//! smoltcp cannot be told to open a connection in SYN-RECEIVED with a given ISN; so when
//! a valid cookie ACK arrives, the stack feeds smoltcp the SYN the client once sent (its
//! ISN and the MSS the cookie carries), drops the SYN-ACK smoltcp answers with (the
//! client already has ours), and from then on shifts sequence numbers between smoltcp's
//! ISN and the cookie ([`super::rewrite`]).

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpAddress, IpProtocol, IpRepr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};

use super::TcpTuple;

/// The window a cookie SYN-ACK offers. Without window scaling (a cookie cannot carry it),
/// so the connection does without, as Linux's does when timestamps are off.
const COOKIE_WINDOW: u16 = 65535;

fn emit(src: IpAddress, dst: IpAddress, tcp: &TcpRepr) -> Vec<u8> {
    let ip = IpRepr::new(src, dst, IpProtocol::Tcp, tcp.buffer_len(), 64);
    let mut packet = vec![0; ip.buffer_len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut packet[..], &caps);
    let header = ip.header_len();
    tcp.emit(&mut TcpPacket::new_unchecked(&mut packet[header..]), &src, &dst, &caps);
    packet
}

fn repr(tuple_ports: (u16, u16), control: TcpControl, seq: u32, ack: Option<u32>, mss: u16) -> TcpRepr<'static> {
    TcpRepr {
        src_port: tuple_ports.0,
        dst_port: tuple_ports.1,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: COOKIE_WINDOW,
        window_scale: None,
        max_seg_size: Some(mss),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    }
}

/// ustack's SYN-ACK carrying `cookie` as its ISN, for the client's SYN with ISN `client_isn`.
pub fn syn_ack(tuple: &TcpTuple, client_isn: u32, cookie: u32, mss: u16) -> Vec<u8> {
    let tcp =
        repr((tuple.local.port(), tuple.remote.port()), TcpControl::Syn, cookie, Some(client_isn.wrapping_add(1)), mss);
    emit(tuple.local.ip().into(), tuple.remote.ip().into(), &tcp)
}

/// A bare ACK from ustack's side: RFC 5961's challenge ACK, repeating what ustack last sent.
pub fn ack(tuple: &TcpTuple, sent: &super::conn::LastSent) -> Vec<u8> {
    let mut tcp = repr((tuple.local.port(), tuple.remote.port()), TcpControl::None, sent.seq_end, Some(sent.ack), 0);
    tcp.max_seg_size = None;
    tcp.window_len = sent.window;
    emit(tuple.local.ip().into(), tuple.remote.ip().into(), &tcp)
}

/// The RST+ACK answering a segment without ACK for no connection (RFC 9293 §3.10.7.1:
/// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, as Linux sends it). smoltcp 0.14 answers
/// such a segment, unless it is a SYN, with a bare RST that acknowledges nothing.
pub fn rst_ack(tuple: &TcpTuple, ack: u32) -> Vec<u8> {
    let mut tcp = repr((tuple.local.port(), tuple.remote.port()), TcpControl::Rst, 0, Some(ack), 0);
    tcp.max_seg_size = None;
    tcp.window_len = 0;
    emit(tuple.local.ip().into(), tuple.remote.ip().into(), &tcp)
}

/// The client's SYN as it was (ISN and MSS), rebuilt from its cookie ACK.
pub fn replayed_syn(tuple: &TcpTuple, client_isn: u32, mss: u16) -> Vec<u8> {
    let tcp = repr((tuple.remote.port(), tuple.local.port()), TcpControl::Syn, client_isn, None, mss);
    emit(tuple.remote.ip().into(), tuple.local.ip().into(), &tcp)
}

/// What the cookie path reads of a TCP segment: its sequence number and the MSS it offers
/// — only if the checksum is right, so no cookie is made or honoured for a corrupted
/// segment.
pub struct SegmentInfo {
    pub seq: u32,
    pub mss: Option<u16>,
}

pub fn segment_info(tcp: &[u8], src: IpAddress, dst: IpAddress) -> Option<SegmentInfo> {
    let packet = TcpPacket::new_checked(tcp).ok()?;
    let repr = TcpRepr::parse(&packet, &src, &dst, &ChecksumCapabilities::default()).ok()?;
    Some(SegmentInfo { seq: repr.seq_number.0 as u32, mss: repr.max_seg_size })
}
