//! Socket options, each by what a peer sees on the wire, on the simulator's virtual clock
//! (no sleeping, the same run on any machine): TCP_NODELAY, SO_LINGER of zero, SO_RCVBUF
//! and SO_SNDBUF, SO_KEEPALIVE, IP_TTL, MSG_PEEK; and their errnos as Linux gives them.
//!
//! Two engines on a link with 1 ms of delay each way: the client at 10.0.0.1, the server
//! at 10.0.0.2, the test making calls on their engines between steps.

use smoltcp::time::{Duration, Instant};
use ustack::engine::{Domain, SockId, StackConfig, Type};
use ustack::errno::Errno;
use ustack::sim::{Simulation, node_addr};

mod two_nodes;
use two_nodes::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A listener on the server's [`PORT`], with `setup` applied to it before listen().
fn listen(sim: &mut Simulation, setup: impl FnOnce(&mut ustack::Engine, SockId)) -> SockId {
    listen_with(sim, SERVER, 8, setup)
}

/// Data segments the client sends at once when it writes one byte, then another while the
/// first is unacknowledged.
fn small_writes_sent_at_once(nodelay: bool) -> usize {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, |_, _| {});
    let (c, _) = establish_with(&mut sim, l, |e, c| e.set_nodelay(c, nodelay).unwrap());
    segments(&mut sim);
    let start = sim.now();
    let engine = &mut sim.nodes[CLIENT].engine;
    assert_eq!(engine.send(c, b"a", false), Ok(1));
    sim.settle(|_, _| false);
    assert_eq!(sim.nodes[CLIENT].engine.send(c, b"b", false), Ok(1));
    sim.settle(|_, _| false);
    run_for(&mut sim, ms(100));
    let data: Vec<Seg> = segments(&mut sim).into_iter().filter(|s| s.from == CLIENT && s.len > 0).collect();
    // Distinct send times: the tail loss probe may resend the last byte 2·SRTT + 2 ms on, if the
    // peer delays its ACK.
    let first_sends = data.iter().filter(|s| s.at == start).count();
    assert!(data.len() >= 2, "both bytes go out eventually: {data:?}");
    first_sends
}

#[test]
fn nodelay_sends_a_small_write_without_waiting_for_the_ack() {
    assert_eq!(small_writes_sent_at_once(false), 1, "Nagle holds the second byte until the first is acknowledged");
    assert_eq!(small_writes_sent_at_once(true), 2, "TCP_NODELAY sends it at once");
}

#[test]
fn nodelay_is_inherited_by_accepted_connections_and_enoprotoopt_on_udp() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, |e, l| e.set_nodelay(l, true).unwrap());
    let (c, accepted) = establish_with(&mut sim, l, |_, _| {});
    assert_eq!(sim.nodes[SERVER].engine.nodelay(accepted), Ok(true));
    assert_eq!(sim.nodes[CLIENT].engine.nodelay(c), Ok(false), "off by default, as in Linux");
    let engine = &mut sim.nodes[CLIENT].engine;
    let udp = engine.socket(Domain::Inet, Type::Dgram);
    assert_eq!(engine.set_nodelay(udp, true), Err(Errno::ENOPROTOOPT));
    assert_eq!(engine.nodelay(udp), Err(Errno::ENOPROTOOPT));
}

#[test]
fn linger_zero_close_resets_and_the_peer_sees_econnreset() {
    for linger_zero in [false, true] {
        let mut sim = network(|_| {});
        let l = listen(&mut sim, |_, _| {});
        let (c, accepted) = establish_with(&mut sim, l, |_, _| {});
        let engine = &mut sim.nodes[CLIENT].engine;
        if linger_zero {
            engine.set_linger(c, Some(std::time::Duration::ZERO)).unwrap();
            assert_eq!(engine.linger(c), Ok(Some(std::time::Duration::ZERO)));
        }
        assert_eq!(engine.send(c, b"unsent?", false), Ok(7));
        engine.close(c);
        segments(&mut sim);
        run_for(&mut sim, ms(50));
        let from_client: Vec<Seg> = segments(&mut sim).into_iter().filter(|s| s.from == CLIENT).collect();
        let mut buf = [0; 16];
        let server = &mut sim.nodes[SERVER].engine;
        if linger_zero {
            assert!(from_client.iter().any(|s| s.rst), "close() sends RST: {from_client:?}");
            assert!(!from_client.iter().any(|s| s.fin), "and no FIN: {from_client:?}");
            assert_eq!(server.recv(accepted, &mut buf), Err(Errno::ECONNRESET));
        } else {
            assert!(from_client.iter().any(|s| s.fin) && !from_client.iter().any(|s| s.rst), "{from_client:?}");
            assert_eq!(server.recv(accepted, &mut buf), Ok(7));
            assert_eq!(server.recv(accepted, &mut buf), Ok(0), "then the FIN");
        }
    }
}

#[test]
fn recv_buffer_size_is_the_window_advertised_and_reported_doubled() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, |e, l| e.set_recv_buffer_size(l, 4000).unwrap());
    assert_eq!(sim.nodes[SERVER].engine.recv_buffer_size(l), Ok(8000), "Linux reports SO_RCVBUF doubled");
    let (c, accepted) = establish_with(&mut sim, l, |_, _| {});
    let syn_ack = segments(&mut sim).into_iter().find(|s| s.from == SERVER && s.syn).expect("a SYN-ACK");
    assert_eq!(syn_ack.window, 4000, "the accepted connection advertises its SO_RCVBUF");
    assert_eq!(sim.nodes[SERVER].engine.recv_buffer_size(accepted), Ok(8000));
    let default = 2 * StackConfig::default().tcp_buffer;
    assert_eq!(sim.nodes[CLIENT].engine.recv_buffer_size(c), Ok(default));

    // The client can have no more than 4000 bytes in flight to the server, however much
    // it queues, until the server reads.
    let engine = &mut sim.nodes[CLIENT].engine;
    assert_eq!(engine.send(c, &[7; 20_000], false), Ok(20_000));
    run_for(&mut sim, ms(500));
    let sent: usize = segments(&mut sim).iter().filter(|s| s.from == CLIENT).map(|s| s.len).sum();
    assert_eq!(sent, 4000, "a full window and not a byte more");

    let engine = &mut sim.nodes[SERVER].engine;
    let tiny = engine.socket(Domain::Inet, Type::Stream);
    engine.set_recv_buffer_size(tiny, 1).unwrap();
    assert_eq!(engine.recv_buffer_size(tiny), Ok(2304), "raised to Linux's minimum");
    engine.set_recv_buffer_size(tiny, 1 << 30).unwrap();
    let most = 2 * StackConfig::default().tcp_receive_max;
    assert_eq!(engine.recv_buffer_size(tiny), Ok(most), "capped at the most a window grows to, as at rmem_max");
}

#[test]
fn send_buffer_size_bounds_what_send_takes() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, |_, _| {});
    let (c, _) = establish_with(&mut sim, l, |e, c| e.set_send_buffer_size(c, 5000).unwrap());
    let engine = &mut sim.nodes[CLIENT].engine;
    assert_eq!(engine.send_buffer_size(c), Ok(10_000));
    assert_eq!(engine.send(c, &[1; 100_000], false), Ok(5000), "a non-blocking send takes what fits");
    assert_eq!(engine.send(c, &[1; 100], false), Err(Errno::EAGAIN));
}

#[test]
fn keepalive_probes_an_idle_connection() {
    for keepalive in [None, Some(std::time::Duration::from_secs(10))] {
        let mut sim = network(|_| {});
        let l = listen(&mut sim, |_, _| {});
        let (c, _) = establish_with(&mut sim, l, |e, c| e.set_keepalive(c, keepalive).unwrap());
        assert_eq!(sim.nodes[CLIENT].engine.keepalive(c), Ok(keepalive));
        segments(&mut sim);
        let start = sim.now();
        run_for(&mut sim, Duration::from_secs(25));
        let probes: Vec<Instant> = segments(&mut sim).iter().filter(|s| s.from == CLIENT).map(|s| s.at).collect();
        match keepalive {
            None => assert_eq!(probes, vec![], "an idle connection is silent"),
            Some(_) => {
                // 10 s after the client's last segment (its handshake ACK, just before
                // `start`), then 10 s after the server's answer to the probe (a 2 ms
                // round trip later): each time the connection has been idle for 10 s.
                assert_eq!(probes.len(), 2, "a probe each 10 s idle: {probes:?}");
                assert!(probes[0] - start <= Duration::from_secs(10) && probes[0] - start > Duration::from_secs(9));
                assert_eq!(probes[1] - probes[0], Duration::from_secs(10) + ms(2));
            }
        }
    }
    let mut sim = network(|_| {});
    let engine = &mut sim.nodes[CLIENT].engine;
    let s = engine.socket(Domain::Inet, Type::Stream);
    assert_eq!(engine.set_keepalive(s, Some(std::time::Duration::ZERO)), Err(Errno::EINVAL));
}

#[test]
fn ttl_is_the_ttl_of_the_packets() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, |e, l| e.set_ttl(l, 9).unwrap());
    let (c, accepted) = establish_with(&mut sim, l, |e, c| {
        assert_eq!(e.ttl(c), Ok(64), "Linux's default");
        e.set_ttl(c, 7).unwrap();
    });
    let segs = segments(&mut sim);
    assert!(segs.iter().filter(|s| s.from == CLIENT).all(|s| s.ttl == 7), "{segs:?}");
    assert!(segs.iter().filter(|s| s.from == SERVER).all(|s| s.ttl == 9), "accepted connections inherit: {segs:?}");
    assert_eq!(sim.nodes[SERVER].engine.ttl(accepted), Ok(9));
    let engine = &mut sim.nodes[CLIENT].engine;
    engine.set_ttl(c, 200).unwrap();
    assert_eq!(engine.send(c, b"x", false), Ok(1));
    run_for(&mut sim, ms(5));
    assert!(segments(&mut sim).iter().filter(|s| s.from == CLIENT).all(|s| s.ttl == 200));
    let engine = &mut sim.nodes[CLIENT].engine;
    assert_eq!(engine.set_ttl(c, 0), Err(Errno::EINVAL));
    assert_eq!(engine.set_ttl(c, 256), Err(Errno::EINVAL));
}

#[test]
fn peek_leaves_the_data_queued() {
    let mut sim = network(|_| {});
    let l = listen(&mut sim, |_, _| {});
    let (c, accepted) = establish_with(&mut sim, l, |_, _| {});
    assert_eq!(sim.nodes[CLIENT].engine.send(c, b"hello", false), Ok(5));
    run_for(&mut sim, ms(5));
    let server = &mut sim.nodes[SERVER].engine;
    let mut buf = [0; 3];
    for _ in 0..2 {
        assert_eq!(server.recv_msg(accepted, &mut buf, true).map(|r| r.len), Ok(3));
        assert_eq!(&buf, b"hel");
    }
    let mut buf = [0; 8];
    assert_eq!(server.recv(accepted, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");

    // UDP: the peeked datagram is the next one received; its whole length is known.
    let client = sim.nodes[CLIENT].engine.socket(Domain::Inet, Type::Dgram);
    let server = sim.nodes[SERVER].engine.socket(Domain::Inet, Type::Dgram);
    sim.nodes[SERVER].engine.bind(server, node_addr(SERVER, 53)).unwrap();
    sim.nodes[CLIENT].engine.send_to(client, b"datagram", node_addr(SERVER, 53)).unwrap();
    run_for(&mut sim, ms(5));
    let engine = &mut sim.nodes[SERVER].engine;
    let mut small = [0; 4];
    let peeked = engine.recv_msg(server, &mut small, true).unwrap();
    assert_eq!((peeked.len, peeked.full_len), (4, 8), "cut to fit, and its length known (MSG_TRUNC)");
    let got = engine.recv_msg(server, &mut buf, false).unwrap();
    assert_eq!((got.len, &buf[..8]), (8, &b"datagram"[..]), "still there after the peek");
    assert_eq!(engine.recv_msg(server, &mut buf, true), Err(Errno::EAGAIN));
}

#[test]
fn failed_connect_is_reported_by_so_error_once() {
    let mut sim = network(|_| {});
    let now = sim.now();
    let engine = &mut sim.nodes[CLIENT].engine;
    let c = engine.socket(Domain::Inet, Type::Stream);
    assert_eq!(engine.connect(now, c, node_addr(SERVER, 9)), Err(Errno::EINPROGRESS));
    assert_eq!(engine.take_error(c), Ok(None), "nothing yet");
    run_for(&mut sim, ms(10));
    let engine = &mut sim.nodes[CLIENT].engine;
    assert_eq!(engine.take_error(c), Ok(Some(Errno::ECONNREFUSED)));
    assert_eq!(engine.take_error(c), Ok(None), "read once, as Linux clears SO_ERROR");
}

#[test]
fn option_errnos_are_linuxs() {
    let mut sim = network(|_| {});
    let engine = &mut sim.nodes[CLIENT].engine;
    // IPV6_V6ONLY: IPv6 sockets only, before bind; then no IPv4 through v4-mapped addresses.
    let v4 = engine.socket(Domain::Inet, Type::Stream);
    assert_eq!(engine.set_only_v6(v4, true), Err(Errno::ENOPROTOOPT));
    assert_eq!(engine.only_v6(v4), Err(Errno::ENOPROTOOPT));
    let v6 = engine.socket(Domain::Inet6, Type::Stream);
    assert_eq!(engine.only_v6(v6), Ok(false), "dual-stack by default");
    engine.set_only_v6(v6, true).unwrap();
    let mapped: std::net::SocketAddr = "[::ffff:10.0.0.2]:80".parse().unwrap();
    assert_eq!(engine.connect(Instant::ZERO, v6, mapped), Err(Errno::ENETUNREACH));
    assert_eq!(engine.bind(v6, "[::ffff:10.0.0.1]:80".parse().unwrap()), Err(Errno::EINVAL));
    let bound = engine.socket(Domain::Inet6, Type::Dgram);
    engine.bind(bound, "[::]:0".parse().unwrap()).unwrap();
    assert_eq!(engine.set_only_v6(bound, true), Err(Errno::EINVAL), "too late once bound");
    let udp6 = engine.socket(Domain::Inet6, Type::Dgram);
    engine.set_only_v6(udp6, true).unwrap();
    assert_eq!(engine.send_to(udp6, b"x", node_addr(SERVER, 53)), Err(Errno::ENETUNREACH));

    // SO_BROADCAST: a broadcast sendto() needs it. (255.255.255.255 with no gateway has no
    // route at all: ENETUNREACH first, as in Linux; tests/api_errno.rs.)
    let udp = engine.socket(Domain::Inet, Type::Dgram);
    let to = "10.0.0.255:9";
    assert_eq!(engine.send_to(udp, b"x", to.parse().unwrap()), Err(Errno::EACCES), "{to}");
    assert_eq!(engine.connect(Instant::ZERO, udp, to.parse().unwrap()), Err(Errno::EACCES), "{to}");
    engine.set_broadcast(udp, true).unwrap();
    assert_eq!(engine.broadcast(udp), Ok(true));
    assert_eq!(engine.send_to(udp, b"x", "10.0.0.255:9".parse().unwrap()), Ok(1));
    assert_eq!(engine.send_to(udp, b"x", "10.0.0.254:9".parse().unwrap()), Ok(1), "not a broadcast address");

    // SO_REUSEADDR reads back.
    assert_eq!(engine.reuse_address(udp), Ok(false));
    engine.set_reuse_address(udp, true).unwrap();
    assert_eq!(engine.reuse_address(udp), Ok(true));
}

#[test]
fn udp_recv_buffer_size_bounds_the_datagrams_queued() {
    let mut sim = network(|_| {});
    let engine = &mut sim.nodes[SERVER].engine;
    let server = engine.socket(Domain::Inet, Type::Dgram);
    engine.set_recv_buffer_size(server, 2000).unwrap();
    engine.bind(server, node_addr(SERVER, 53)).unwrap();
    assert_eq!(engine.recv_buffer_size(server), Ok(4000));
    let client = sim.nodes[CLIENT].engine.socket(Domain::Inet, Type::Dgram);
    for i in 0..3u8 {
        sim.nodes[CLIENT].engine.send_to(client, &[i; 1000], node_addr(SERVER, 53)).unwrap();
    }
    run_for(&mut sim, ms(5));
    let engine = &mut sim.nodes[SERVER].engine;
    let mut buf = [0; 1500];
    assert_eq!(engine.recv_from(server, &mut buf).map(|(n, _)| (n, buf[0])), Ok((1000, 0)));
    assert_eq!(engine.recv_from(server, &mut buf).map(|(n, _)| (n, buf[0])), Ok((1000, 1)));
    assert_eq!(
        engine.recv_from(server, &mut buf),
        Err(Errno::EAGAIN),
        "the third did not fit: dropped, as Linux drops it"
    );
}
