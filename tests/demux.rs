//! ustack's demux: every arriving packet is classified by 5-tuple, and the decision is data
//! the stack records — asserted here for each case, with what the peer sees on the wire.

use etherparse::{Icmpv4Type, SlicedPacket, TransportSlice};
use ustack::engine::demux::Queue;
use ustack::engine::{Closer, Decision, DemuxEvent, Owner};
use ustack::{Errno, Events, Stack, StackConfig};
use ustack_testkit::inject::{frames_before_ping_reply, inject, inject_udp, next_segment, tcp_flags};
use ustack_testkit::*;

/// The decisions `stack` made for packets from `remote_port`, oldest first.
fn decisions_from(stack: &Stack, remote_port: u16) -> Vec<Decision> {
    stack
        .demux_events()
        .into_iter()
        .filter(|e: &DemuxEvent| e.flow.is_some_and(|f| f.remote.port() == remote_port))
        .map(|e| e.decision)
        .collect()
}

#[test]
fn a_syn_goes_to_the_listener_and_later_segments_to_the_accepted_socket() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 4);
    let c = tcp(&p.a, domain_of(B));
    c.connect(at).unwrap();
    let (s, peer) = l.accept().unwrap();
    c.send(b"hello").unwrap();
    assert_eq!(recv_exact(&s, 5), b"hello");

    let at_server = decisions_from(&p.b, peer.port());
    assert!(
        matches!(at_server[0], Decision::Admitted { listener, syn_queue: 1, accept_queue: 0, .. } if listener == l.id()),
        "the SYN is admitted to the listener: {at_server:?}"
    );
    assert!(
        at_server.iter().any(|d| matches!(d, Decision::Connection { owner: Owner::Socket(id), .. } if *id == s.id())),
        "the data segment goes to the accepted socket: {at_server:?}"
    );
    let at_client = decisions_from(&p.a, at.port());
    assert!(
        matches!(at_client[0], Decision::Connection { owner: Owner::Socket(id), .. } if id == c.id()),
        "the SYN-ACK goes to the connecting socket: {at_client:?}"
    );
}

#[test]
fn a_syn_for_a_closed_port_is_answered_with_rst_and_counted() {
    let p = pair();
    let c = tcp(&p.a, domain_of(B));
    assert_eq!(err(c.connect(addr(B, 9))), Errno::ECONNREFUSED);
    let events = p.b.demux_events();
    assert!(
        events.iter().any(|e| e.decision == Decision::TcpNoSocket { syn: true }
            && e.flow.is_some_and(|f| f.local.port() == 9 && f.proto == "tcp")),
        "{events:?}"
    );
    assert_eq!(p.b.demux_table().counters.tcp_no_socket, 1);
}

#[test]
fn udp_goes_to_the_bound_socket_and_to_nobody_gets_port_unreachable() {
    let lone = lone_b();
    let u = udp(&lone.stack, domain_of(B));
    u.bind(addr(B, 53)).unwrap();
    inject_udp(&lone.wire, 5000, 53, b"query");
    let mut buf = [0; 16];
    assert_eq!(u.recv_from(&mut buf).unwrap(), (5, addr(A, 5000)));
    assert_eq!(decisions_from(&lone.stack, 5000), [Decision::Udp { socket: u.id() }]);

    inject_udp(&lone.wire, 5001, 54, b"nobody home");
    let answers = frames_before_ping_reply(&lone.wire, 1);
    let unreachable = answers.iter().any(|frame| {
        let packet = SlicedPacket::from_ip(frame).unwrap();
        matches!(packet.transport, Some(TransportSlice::Icmpv4(icmp))
            if matches!(icmp.icmp_type(), Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)))
    });
    assert!(unreachable, "ICMP port unreachable comes back");
    assert_eq!(decisions_from(&lone.stack, 5001), [Decision::UdpNoSocket]);
    assert_eq!(lone.stack.demux_table().counters.ping, 1, "the barrier's ping was classified too");
}

/// RFC 8200 §8.1: over IPv6 the UDP checksum is mandatory, and a datagram whose checksum
/// field is zero is discarded. smoltcp would take zero as "no checksum", as in IPv4.
#[test]
fn udp_over_ipv6_without_a_checksum_is_dropped() {
    let lone = lone_b();
    let u = udp(&lone.stack, domain_of(B6));
    u.bind(addr(B6, 53)).unwrap();
    let datagram = |from: u16, zero_checksum: bool| {
        let mut frame = Vec::new();
        let (a6, b6): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (A6.parse().unwrap(), B6.parse().unwrap());
        etherparse::PacketBuilder::ipv6(a6.octets(), b6.octets(), 64)
            .udp(from, 53)
            .write(&mut frame, b"query")
            .unwrap();
        if zero_checksum {
            frame[46..48].fill(0);
        }
        lone.wire.send_raw(&frame);
    };
    datagram(5000, true);
    datagram(5001, false);
    let mut buf = [0; 16];
    assert_eq!(u.recv_from(&mut buf).unwrap(), (5, addr(A6, 5001)), "only the checksummed datagram arrives");
    assert!(
        matches!(decisions_from(&lone.stack, 5000)[..], [Decision::Other(why)] if why.contains("without a checksum")),
        "{:?}",
        decisions_from(&lone.stack, 5000)
    );
}

#[test]
fn a_full_accept_queue_drops_syns_silently_and_a_retransmitted_syn_makes_no_second_connection() {
    let lone = lone_b();
    // Backlog 0: one connection may wait for accept() (Linux lets backlog + 1 wait).
    let (l, at) = listener(&lone.stack, B, 0);
    inject(&lone.wire, 40000, at.port(), 1000, None, true);
    let syn_ack = next_segment(&lone.wire);
    assert!(syn_ack.syn && syn_ack.ack);
    inject(&lone.wire, 40000, at.port(), 1000, None, true); // a retransmitted SYN
    let again = frames_before_ping_reply(&lone.wire, 1);
    // Answered with the same SYN-ACK, at once, as Linux answers it; no new connection.
    assert!(
        again.iter().filter_map(|f| tcp_flags(f)).any(|f| f.syn && f.ack && f.seq == syn_ack.seq),
        "the SYN-ACK again"
    );
    assert!(matches!(decisions_from(&lone.stack, 40000)[1], Decision::SynAckResent { limited: false, .. }));
    assert_eq!(l.listen_queues(), Some((1, 0, 0)), "still one half-open connection");
    inject(&lone.wire, 40000, at.port(), 1001, Some(syn_ack.seq.wrapping_add(1)), false);
    wait_for(&l, Events::IN);
    assert_eq!(l.listen_queues(), Some((0, 1, 0)));

    inject(&lone.wire, 40001, at.port(), 5000, None, true);
    let answers = frames_before_ping_reply(&lone.wire, 2);
    assert!(answers.iter().all(|f| tcp_flags(f).is_none()), "no SYN-ACK and no RST: the SYN is dropped silently");
    assert_eq!(decisions_from(&lone.stack, 40001), [Decision::Overflow { listener: l.id(), queue: Queue::Accept }]);
    assert_eq!(l.listen_queues(), Some((0, 1, 1)), "the drop is counted");

    let (_first, _) = l.accept().unwrap();
    inject(&lone.wire, 40001, at.port(), 5000, None, true); // the client's retransmission
    let syn_ack = next_segment(&lone.wire);
    assert!(syn_ack.syn && syn_ack.ack && syn_ack.ack_no == 5001, "with room again, the retransmitted SYN gets in");
}

/// Reset on overflow is Linux's `tcp_abort_on_overflow=1`: the handshake's last ACK that
/// finds the accept queue full is answered with RST and the half-open connection is gone;
/// a SYN that finds it full is still dropped silently.
#[test]
fn reset_on_overflow_resets_the_handshake_ack_that_finds_the_accept_queue_full_and_drops_syns() {
    ustack_testkit::init_test_logging();
    let (end_a, end_b) = ustack::device::Wire::pair(1500).unwrap();
    let stack = Stack::new(end_b, StackConfig { reset_on_overflow: true, ..config(B, B6) }).unwrap();
    // Backlog 2: the SYN queue holds 2 and the accept queue 3.
    let (l, at) = listener(&stack, B, 2);
    let syn = |port: u16| {
        inject(&end_a, port, at.port(), 1000, None, true);
        next_segment(&end_a).seq
    };
    let ack = |port: u16, isn: u32| inject(&end_a, port, at.port(), 1001, Some(isn.wrapping_add(1)), false);
    for (port, waiting) in [(40000, 1), (40001, 2)] {
        let isn = syn(port);
        ack(port, isn);
        eventually("the handshake completes", || l.listen_queues() == Some((0, waiting, 0)));
    }
    let (isn3, isn4) = (syn(40002), syn(40003));
    ack(40002, isn3);
    eventually("the accept queue fills", || l.listen_queues() == Some((1, 3, 0)));
    ack(40003, isn4);
    let answers = frames_before_ping_reply(&end_a, 1);
    let rst = answers.iter().filter_map(|f| tcp_flags(f)).find(|t| t.rst).expect("the ACK is answered with RST");
    assert_eq!(rst.seq, isn4.wrapping_add(1), "the RST's sequence number is the ACK's acknowledgment");
    assert_eq!(decisions_from(&stack, 40003).last(), Some(&Decision::AckDropped { listener: l.id(), reset: true }));
    assert_eq!(l.listen_queues(), Some((0, 3, 0)), "the fourth connection is gone, not half-open");
    assert_eq!(stack.demux_table().counters.overflow_reset, 1);

    inject(&end_a, 40004, at.port(), 5000, None, true);
    let answers = frames_before_ping_reply(&end_a, 2);
    assert!(answers.iter().all(|f| tcp_flags(f).is_none()), "no SYN-ACK and no RST: the SYN is dropped silently");
    assert_eq!(decisions_from(&stack, 40004), [Decision::Overflow { listener: l.id(), queue: Queue::Accept }]);
}

#[test]
fn the_ack_completing_a_handshake_is_dropped_while_the_accept_queue_is_full() {
    let lone = lone_b();
    // Backlog 2: the SYN queue holds 2 and the accept queue 3.
    let (l, at) = listener(&lone.stack, B, 2);
    let syn = |port: u16| {
        inject(&lone.wire, port, at.port(), 1000, None, true);
        next_segment(&lone.wire).seq
    };
    let ack = |port: u16, isn: u32| inject(&lone.wire, port, at.port(), 1001, Some(isn.wrapping_add(1)), false);
    for (port, waiting) in [(40000, 1), (40001, 2)] {
        let isn = syn(port);
        ack(port, isn);
        eventually("the handshake completes", || l.listen_queues() == Some((0, waiting, 0)));
    }
    let (isn3, isn4) = (syn(40002), syn(40003));
    assert_eq!(l.listen_queues(), Some((2, 2, 0)), "two half-open connections");
    ack(40002, isn3);
    eventually("the accept queue fills", || l.listen_queues() == Some((1, 3, 0)));
    ack(40003, isn4);
    frames_before_ping_reply(&lone.wire, 1);
    assert_eq!(
        decisions_from(&lone.stack, 40003).last(),
        Some(&Decision::AckDropped { listener: l.id(), reset: false })
    );
    assert_eq!(l.listen_queues(), Some((1, 3, 1)), "the fourth stays half-open, and the drop is counted");
}

#[test]
fn the_demux_table_shows_listeners_connections_and_udp_sockets() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 4);
    let (c, s) = connection_to(&p, &l, at);
    let u = udp(&p.b, domain_of(B));
    u.bind(addr(B, 53)).unwrap();
    let table = p.b.demux_table();
    let text = table.to_string();
    assert!(text.starts_with("PROTO"), "{text}");
    let row =
        |needle: &str| text.lines().find(|line| line.contains(needle)).unwrap_or_else(|| panic!("{needle}: {text}"));
    assert!(row("LISTEN").contains(&format!("#{}", l.id())) && row("LISTEN").contains("syn 0/4  accept 0/5"));
    let conn = row(&c.local_addr().unwrap().to_string());
    assert!(conn.contains("ESTABLISHED") && conn.contains(&format!("#{}", s.id())), "{conn}");
    assert!(row("udp").contains("bound"));
}

/// A connection from a's socket to listener `l` on b, and the accepted socket.
fn connection_to(p: &Pair, l: &ustack::Socket, at: std::net::SocketAddr) -> (ustack::Socket, ustack::Socket) {
    let c = tcp(&p.a, domain_of(B));
    c.connect(at).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn each_connection_keeps_its_timeline_rtt_and_who_closed_first() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 4);
    let (c, s) = connection_to(&p, &l, at);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(s.recv(&mut [0; 8]).unwrap(), 0);
    let server = s.connection_info().unwrap();
    let client = c.connection_info().unwrap();
    let states =
        |info: &ustack::engine::ConnectionInfo| info.timeline.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>();
    assert_eq!(states(&server), ["LISTEN", "SYN-RECEIVED", "ESTABLISHED", "CLOSE-WAIT"]);
    assert_eq!(&states(&client)[..2], ["SYN-SENT", "ESTABLISHED"]);
    assert!(server.timeline.windows(2).all(|w| w[0].0 <= w[1].0), "times never go backwards");
    assert!(server.handshake_rtt_ms.is_some() && client.handshake_rtt_ms.is_some());
    assert_eq!(server.closed_first, Some(Closer::Remote));
    eventually("the client's FIN acknowledged", || c.connection_info().unwrap().closed_first == Some(Closer::Local));
    assert_eq!(server.tuple.remote, c.local_addr().unwrap());
}

#[test]
fn a_syn_beyond_the_syn_queue_gets_a_cookie_and_the_cookie_ack_makes_the_connection() {
    let lone = lone_b();
    let (l, at) = listener(&lone.stack, B, 1); // the SYN queue holds one
    inject(&lone.wire, 40000, at.port(), 1000, None, true);
    next_segment(&lone.wire); // 40000 stays half-open, filling the SYN queue
    inject(&lone.wire, 40001, at.port(), 5000, None, true);
    let cookie = next_segment(&lone.wire);
    assert!(cookie.syn && cookie.ack && cookie.ack_no == 5001, "a SYN-ACK answers, from no state");
    assert_eq!(decisions_from(&lone.stack, 40001), [Decision::CookieSent { listener: l.id() }]);
    assert_eq!(l.listen_queues(), Some((1, 0, 0)), "the cookie took no room");

    ustack_testkit::inject::inject_data(&lone.wire, 40001, at.port(), 5001, cookie.seq.wrapping_add(1), b"hi");
    let (s, peer) = l.accept().unwrap();
    assert_eq!(peer, addr(A, 40001));
    assert_eq!(recv_exact(&s, 2), b"hi", "data on the cookie ACK is delivered");
    assert!(matches!(decisions_from(&lone.stack, 40001)[1], Decision::CookieAccepted { .. }));
    s.send(b"yo").unwrap();
    let reply = next_segment(&lone.wire);
    assert_eq!(reply.seq, cookie.seq.wrapping_add(1), "ustack keeps numbering from the cookie");
    let info = s.connection_info().unwrap();
    let states: Vec<_> = info.timeline.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(states, ["LISTEN", "SYN-RECEIVED", "ESTABLISHED"]);
    assert_eq!(info.handshake_rtt_ms, None, "no RTT: the SYN came before any state was kept");
}

#[test]
fn an_ack_with_a_forged_cookie_is_answered_with_rst() {
    let lone = lone_b();
    let (_l, at) = listener(&lone.stack, B, 1);
    inject(&lone.wire, 40000, at.port(), 1000, None, true);
    next_segment(&lone.wire);
    ustack_testkit::inject::inject_data(&lone.wire, 40001, at.port(), 5001, 0x1234_5678, b"hi");
    let rst = next_segment(&lone.wire);
    assert!(rst.rst, "no connection is made from a forged cookie");
    assert_eq!(decisions_from(&lone.stack, 40001), [Decision::TcpNoSocket { syn: false }]);
}

/// A connection from 10.0.0.1:`port` to `l`, played by hand; returns the accepted socket
/// and the next sequence numbers of the client (ours) and the server.
fn raw_connection(
    lone: &ustack_testkit::Lone,
    l: &ustack::Socket,
    at: std::net::SocketAddr,
    port: u16,
) -> (ustack::Socket, u32, u32) {
    inject(&lone.wire, port, at.port(), 1000, None, true);
    let syn_ack = next_segment(&lone.wire);
    inject(&lone.wire, port, at.port(), 1001, Some(syn_ack.seq.wrapping_add(1)), false);
    let (s, _) = l.accept().unwrap();
    (s, 1001, syn_ack.seq.wrapping_add(1))
}

#[test]
fn an_in_window_rst_that_is_not_exact_gets_a_challenge_ack_and_an_exact_one_resets() {
    let lone = lone_b();
    let (l, at) = listener(&lone.stack, B, 4);
    let (s, client_next, server_next) = raw_connection(&lone, &l, at, 40000);
    // RFC 5961 §3.2: in the window, but not RCV.NXT.
    ustack_testkit::inject::inject_rst(&lone.wire, 40000, at.port(), client_next + 100);
    let challenge = next_segment(&lone.wire);
    assert!(challenge.ack && !challenge.rst && !challenge.syn, "a challenge ACK");
    assert_eq!((challenge.seq, challenge.ack_no), (server_next, client_next), "it tells the peer RCV.NXT");
    assert!(matches!(decisions_from(&lone.stack, 40000).last(), Some(Decision::ChallengeAck { .. })));
    s.send(b"still here").unwrap();
    assert!(next_segment(&lone.wire).ack, "the connection lives on");
    assert_eq!(s.tcp_state(), Some(smoltcp::socket::tcp::State::Established));

    // Outside the window: ignored, no answer.
    ustack_testkit::inject::inject_rst(&lone.wire, 40000, at.port(), client_next.wrapping_add(1 << 30));
    assert!(frames_before_ping_reply(&lone.wire, 1).iter().all(|f| tcp_flags(f).is_none()));
    assert!(matches!(decisions_from(&lone.stack, 40000).last(), Some(Decision::RstOutOfWindow { .. })));

    // Exactly RCV.NXT: the connection is reset.
    ustack_testkit::inject::inject_rst(&lone.wire, 40000, at.port(), client_next);
    assert_eq!(err(s.recv(&mut [0; 8])), Errno::ECONNRESET);
}

#[test]
fn an_in_window_syn_on_an_established_connection_gets_a_challenge_ack() {
    let lone = lone_b();
    let (l, at) = listener(&lone.stack, B, 4);
    let (s, client_next, server_next) = raw_connection(&lone, &l, at, 40000);
    inject(&lone.wire, 40000, at.port(), client_next + 10, None, true);
    let challenge = next_segment(&lone.wire);
    // smoltcp alone drops such a SYN silently; RFC 5961 §4.2 wants a challenge ACK.
    assert!(challenge.ack && !challenge.syn && !challenge.rst, "a challenge ACK");
    assert_eq!((challenge.seq, challenge.ack_no), (server_next, client_next));
    assert!(matches!(decisions_from(&lone.stack, 40000).last(), Some(Decision::ChallengeAck { .. })));
    assert_eq!(s.tcp_state(), Some(smoltcp::socket::tcp::State::Established));
}

#[test]
fn a_damaged_syn_takes_no_place_in_the_syn_queue_and_leaves_no_record() {
    // smoltcp drops a segment whose checksum is wrong; admitted first, it would leave a
    // half-open connection that never was in the counters and the connection history.
    let lone = lone_b();
    let (l, at) = listener(&lone.stack, B, 4);
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, at.port(), 1000, 65535)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame[20 + 14] ^= 0x01; // the window field: the TCP checksum no longer matches
    lone.wire.send_raw(&frame);
    let answers = frames_before_ping_reply(&lone.wire, 1);
    assert!(answers.iter().all(|f| tcp_flags(f).is_none()), "no SYN-ACK and no RST");
    assert_eq!(decisions_from(&lone.stack, 40000), [Decision::Other("SYN with a bad checksum")]);
    assert_eq!(l.listen_queues(), Some((0, 0, 0)));
    assert_eq!(lone.stack.demux_table().counters.admitted, 0);
    let history = lone.stack.connections();
    assert!(history.is_empty(), "{history:?}");
    // The client's retransmission, undamaged, is admitted as usual.
    inject(&lone.wire, 40000, at.port(), 1000, None, true);
    assert!(next_segment(&lone.wire).syn);
}
