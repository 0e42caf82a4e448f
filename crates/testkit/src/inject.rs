//! Playing a peer by hand: raw IPv4 packets from 10.0.0.1 ("a") injected into stack "b"
//! over its wire, and b's answers read back.

use etherparse::{IcmpEchoHeader, Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};
use ustack::device::WireEnd;

use crate::sockets::eventually;

/// What the tests read of a TCP segment.
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub rst: bool,
    pub seq: u32,
    pub ack_no: u32,
}

pub fn tcp_flags(frame: &[u8]) -> Option<Flags> {
    let packet = SlicedPacket::from_ip(frame).ok()?;
    let Some(TransportSlice::Tcp(t)) = packet.transport else { return None };
    Some(Flags {
        syn: t.syn(),
        ack: t.ack(),
        rst: t.rst(),
        seq: t.sequence_number(),
        ack_no: t.acknowledgment_number(),
    })
}

/// Sends a TCP segment from 10.0.0.1:`from` to 10.0.0.2:`to`, as stack "a" would.
pub fn inject(wire: &WireEnd, from: u16, to: u16, seq: u32, ack: Option<u32>, syn: bool) {
    let mut builder = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(from, to, seq, 65535);
    if syn {
        builder = builder.syn();
    }
    if let Some(ack) = ack {
        builder = builder.ack(ack);
    }
    let mut frame = Vec::new();
    builder.write(&mut frame, &[]).unwrap();
    wire.send_raw(&frame);
}

/// Sends an ACK segment carrying `payload` from 10.0.0.1:`from` to 10.0.0.2:`to`.
pub fn inject_data(wire: &WireEnd, from: u16, to: u16, seq: u32, ack: u32, payload: &[u8]) {
    let mut frame = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(from, to, seq, 65535)
        .ack(ack)
        .psh()
        .write(&mut frame, payload)
        .unwrap();
    wire.send_raw(&frame);
}

/// Sends a RST from 10.0.0.1:`from` to 10.0.0.2:`to` with sequence number `seq`.
pub fn inject_rst(wire: &WireEnd, from: u16, to: u16, seq: u32) {
    let mut frame = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(from, to, seq, 0).rst().write(&mut frame, &[]).unwrap();
    wire.send_raw(&frame);
}

/// Sends a UDP datagram from 10.0.0.1:`from` to 10.0.0.2:`to`.
pub fn inject_udp(wire: &WireEnd, from: u16, to: u16, payload: &[u8]) {
    let mut frame = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(from, to).write(&mut frame, payload).unwrap();
    wire.send_raw(&frame);
}

/// Sends an ICMP echo request from 10.0.0.1 to 10.0.0.2 with sequence number `seq`.
pub fn inject_ping(wire: &WireEnd, seq: u16) {
    let mut frame = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(0x7e57, seq)
        .write(&mut frame, b"ping")
        .unwrap();
    wire.send_raw(&frame);
}

/// Whether `frame` is the echo reply to [`inject_ping`]'s request `seq`.
pub fn is_echo_reply(frame: &[u8], seq: u16) -> bool {
    let Ok(packet) = SlicedPacket::from_ip(frame) else { return false };
    matches!(packet.transport, Some(TransportSlice::Icmpv4(icmp))
        if icmp.icmp_type() == Icmpv4Type::EchoReply(IcmpEchoHeader { id: 0x7e57, seq }))
}

/// A barrier: pings the stack and returns every frame it sent before the echo reply.
/// The stack handles frames in order, so whatever it answered to earlier packets is in
/// the result, and what is not there was not sent.
pub fn frames_before_ping_reply(wire: &WireEnd, seq: u16) -> Vec<Vec<u8>> {
    inject_ping(wire, seq);
    let mut before = Vec::new();
    eventually("the echo reply", || {
        while let Some(frame) = wire.recv_raw() {
            if is_echo_reply(&frame, seq) {
                return true;
            }
            before.push(frame);
        }
        false
    });
    before
}

/// The next TCP segment stack "b" sends.
pub fn next_segment(wire: &WireEnd) -> Flags {
    let mut found = None;
    eventually("a segment from the stack", || {
        while let Some(frame) = wire.recv_raw() {
            if let Some(flags) = tcp_flags(&frame) {
                found = Some(flags);
                return true;
            }
        }
        false
    });
    found.unwrap()
}
