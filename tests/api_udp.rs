//! The UDP half of the socket API over the in-memory wire: sendto/recvfrom, datagram
//! boundaries, connect(), message sizes, shutdown, dual-stack. Errnos are Linux's.

use ustack_testkit::*;

use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use ustack::{Domain, Errno, Events, PollFd, Socket};

const FAMILIES: [(&str, &str); 2] = [(A, B), (A6, B6)];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A UDP socket on `ip` (an ephemeral port) and its address.
fn bound(stack: &ustack::Stack, ip: &str) -> (Socket, SocketAddr) {
    let s = udp(stack, domain_of(ip));
    s.bind(addr(ip, 0)).unwrap();
    let at = s.local_addr().unwrap();
    (s, at)
}

#[test]
fn datagram_boundaries_are_kept_and_recvfrom_names_the_sender() {
    let p = pair();
    for (a_ip, b_ip) in FAMILIES {
        let (rx, at) = bound(&p.b, b_ip);
        let (tx, from) = bound(&p.a, a_ip);
        let sizes = [1, 100, 1000];
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(tx.send_to(&vec![i as u8; n], at).unwrap(), n);
        }
        for (i, &n) in sizes.iter().enumerate() {
            let mut buf = [0xff; 2048];
            let (got, sender) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(got, n, "one recv, one whole datagram");
            assert!(buf[..got].iter().all(|&b| b == i as u8));
            assert_eq!(sender, from);
        }
        // An empty datagram is a datagram too.
        tx.send_to(&[], at).unwrap();
        assert_eq!(rx.recv_from(&mut [0; 8]).unwrap(), (0, from));
    }
}

#[test]
fn sendto_from_an_unbound_socket_binds_an_ephemeral_port() {
    let p = pair();
    let (rx, at) = bound(&p.b, B);
    let tx = udp(&p.a, Domain::Inet);
    assert_eq!(tx.local_addr().unwrap(), addr("0.0.0.0", 0));
    tx.send_to(b"hi", at).unwrap();
    let local = tx.local_addr().unwrap();
    assert!((49152..=65535).contains(&local.port()));
    let (_, from) = rx.recv_from(&mut [0; 8]).unwrap();
    assert_eq!(from, addr(A, local.port()));
    // The reply comes back to the implicit port.
    rx.send_to(b"back", from).unwrap();
    let mut buf = [0; 8];
    assert_eq!(tx.recv_from(&mut buf).unwrap(), (4, at));
}

#[test]
fn connect_fixes_the_peer_and_filters_other_senders() {
    let p = pair();
    let (u, at) = bound(&p.b, B);
    let (v, v_at) = bound(&p.a, A);
    let (w, _) = bound(&p.a, A);
    let (x, x_at) = bound(&p.a, A);
    u.connect(v_at).unwrap();
    assert_eq!(u.peer_addr().unwrap(), v_at);
    assert_eq!(u.local_addr().unwrap(), at);
    // w's datagram to u reaches b before w's datagram to y (also on b): when y has its
    // own, u has had its.
    let (y, y_at) = bound(&p.b, B);
    w.send_to(b"not from the peer", at).unwrap();
    w.send_to(b"marker", y_at).unwrap();
    assert_eq!(y.recv_from(&mut [0; 16]).unwrap().0, 6);
    let mut fds = [PollFd::new(&u, Events::IN)];
    assert_eq!(
        ustack::poll(&mut fds, Some(Duration::ZERO)).unwrap(),
        0,
        "a filtered datagram does not make u readable"
    );
    u.set_nonblocking(true).unwrap();
    assert_eq!(err(u.recv(&mut [0; 32])), Errno::EAGAIN);
    u.set_nonblocking(false).unwrap();
    v.send_to(b"from the peer", at).unwrap();
    let mut buf = [0; 32];
    assert_eq!(u.recv_from(&mut buf).unwrap(), (13, v_at));
    assert_eq!(&buf[..13], b"from the peer");
    // send() without an address goes to the peer.
    assert_eq!(u.send(b"reply").unwrap(), 5);
    assert_eq!(v.recv_from(&mut buf).unwrap(), (5, at));
    // sendto() with an address still goes there (Linux).
    u.send_to(b"elsewhere", x_at).unwrap();
    assert_eq!(x.recv_from(&mut buf).unwrap(), (9, at));
}

#[test]
fn connect_shows_the_chosen_source_address() {
    let p = pair();
    let u = udp(&p.a, Domain::Inet);
    u.connect(addr(B, 53)).unwrap();
    let local = u.local_addr().unwrap();
    assert_eq!(local.ip().to_string(), A, "getsockname() after connect() shows the route's source");
    assert!((49152..=65535).contains(&local.port()));
}

#[test]
fn send_on_an_unconnected_udp_socket_is_edestaddrreq() {
    let p = pair();
    let u = udp(&p.a, Domain::Inet);
    assert_eq!(err(u.send(b"x")), Errno::EDESTADDRREQ);
    u.bind(addr(A, 0)).unwrap();
    assert_eq!(err(u.send(b"x")), Errno::EDESTADDRREQ);
    assert_eq!(err(u.peer_addr()), Errno::ENOTCONN);
    assert_eq!(err(u.send_to(b"x", addr(B, 0))), Errno::EINVAL, "port 0");
}

#[test]
fn a_datagram_larger_than_an_ip_packet_is_emsgsize() {
    // As Linux: up to 65,507 bytes over IPv4 (65,535 less the IP and UDP headers: IPv4's
    // Total Length counts its header), 65,527 over IPv6 (its Payload Length does not), sent
    // in fragments (smoltcp's for IPv4, ustack's for IPv6) and reassembled by the receiver.
    let p = pair();
    for ((a_ip, b_ip), max) in FAMILIES.into_iter().zip([65_507, 65_527]) {
        let (rx, at) = bound(&p.b, b_ip);
        let tx = udp(&p.a, domain_of(a_ip));
        assert_eq!(err(tx.send_to(&vec![0; max + 1], at)), Errno::EMSGSIZE);
        assert_eq!(err(tx.send_to(&vec![0; 65_528], at)), Errno::EMSGSIZE);
        let datagram = pattern(max, 3);
        assert_eq!(tx.send_to(&datagram, at).unwrap(), max);
        let mut buf = vec![0; 70_000];
        let n = rx.recv_from(&mut buf).unwrap().0;
        assert!(buf[..n] == datagram[..], "the largest datagram arrives whole ({n} of {max} bytes)");
        // To the sender's own stack: through its loopback, whole.
        let (own, own_at) = bound(&p.a, a_ip);
        assert_eq!(tx.send_to(&datagram, own_at).unwrap(), max);
        let n = own.recv_from(&mut buf).unwrap().0;
        assert!(buf[..n] == datagram[..], "to its own stack: whole ({n} of {max} bytes)");
    }
}

#[test]
fn recv_into_a_smaller_buffer_truncates_and_drops_the_rest() {
    let p = pair();
    let (rx, at) = bound(&p.b, B);
    let (tx, _) = bound(&p.a, A);
    tx.send_to(b"0123456789", at).unwrap();
    tx.send_to(b"next", at).unwrap();
    let mut small = [0; 4];
    assert_eq!(rx.recv(&mut small).unwrap(), 4);
    assert_eq!(&small, b"0123");
    let mut buf = [0; 16];
    assert_eq!(rx.recv(&mut buf).unwrap(), 4, "the rest of the first datagram is gone");
    assert_eq!(&buf[..4], b"next");
}

#[test]
fn listen_and_accept_on_udp_are_eopnotsupp() {
    let p = pair();
    let (u, _) = bound(&p.a, A);
    assert_eq!(err(u.listen(1)), Errno::EOPNOTSUPP);
    assert_eq!(err(u.accept()), Errno::EOPNOTSUPP);
    let fresh = udp(&p.a, Domain::Inet6);
    assert_eq!(err(fresh.accept()), Errno::EOPNOTSUPP, "unbound");
    assert_eq!(err(fresh.listen(1)), Errno::EOPNOTSUPP);
}

#[test]
fn recv_nonblocking_and_with_timeout_give_eagain() {
    let p = pair();
    let (u, _) = bound(&p.a, A);
    u.set_nonblocking(true).unwrap();
    assert_eq!(err(u.recv_from(&mut [0; 8])), Errno::EAGAIN);
    assert_eq!(err(u.recv(&mut [0; 8])), Errno::EAGAIN);
    u.set_nonblocking(false).unwrap();
    u.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
    assert_eq!(err(u.recv_from(&mut [0; 8])), Errno::EAGAIN, "nothing arrived within SO_RCVTIMEO");
    // An unbound socket can wait too (nothing can arrive).
    let unbound = udp(&p.a, Domain::Inet);
    unbound.set_nonblocking(true).unwrap();
    assert_eq!(err(unbound.recv(&mut [0; 8])), Errno::EAGAIN);
}

#[test]
fn recv_waits_for_a_datagram_from_another_thread() {
    let p = pair();
    let (rx, at) = bound(&p.b, B);
    let (tx, from) = bound(&p.a, A);
    thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut buf = [0; 16];
            let (n, sender) = rx.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), sender)
        });
        tx.send_to(b"knock", at).unwrap();
        assert_eq!(reader.join().unwrap(), (b"knock".to_vec(), from));
    });
}

#[test]
fn shutdown_of_udp_sockets() {
    let p = pair();
    let (u, at) = bound(&p.b, B);
    assert_eq!(err(u.shutdown(Shutdown::Both)), Errno::ENOTCONN, "not connected");
    let (v, v_at) = bound(&p.a, A);
    u.connect(v_at).unwrap();
    u.shutdown(Shutdown::Write).unwrap();
    assert_eq!(err(u.send(b"x")), Errno::EPIPE);
    assert_eq!(err(u.send_to(b"x", v_at)), Errno::EPIPE);
    u.shutdown(Shutdown::Read).unwrap();
    // 0, not EAGAIN after SO_RCVTIMEO: recv() did not wait.
    assert_eq!(u.recv(&mut [0; 8]).unwrap(), 0, "SHUT_RD: recv() returns 0 instead of waiting");
    assert!(wait_for(&u, Events::IN).contains(Events::IN));
    // Linux still delivers datagrams that arrive after SHUT_RD.
    v.send_to(b"late", at).unwrap();
    eventually("the late datagram arrives", || u.recv(&mut [0; 8]) == Ok(4));
}

#[test]
fn poll_waits_on_several_sockets_and_reports_only_the_ready_one() {
    let p = pair();
    let (u1, _) = bound(&p.b, B);
    let (u2, at2) = bound(&p.b, B6);
    let (tx, _) = bound(&p.a, A6);
    thread::scope(|scope| {
        let sender = scope.spawn(|| tx.send_to(b"for u2", at2));
        let mut fds = [PollFd::new(&u1, Events::IN), PollFd::new(&u2, Events::IN)];
        assert_eq!(ustack::poll(&mut fds, Some(WAIT)).unwrap(), 1);
        assert!(fds[0].revents.is_empty());
        assert!(fds[1].revents.contains(Events::IN));
        sender.join().unwrap().unwrap();
    });
    assert_eq!(u2.recv(&mut [0; 16]).unwrap(), 6);
    // Nothing ready: the timeout passes and poll() returns 0.
    let mut fds = [PollFd::new(&u1, Events::IN), PollFd::new(&u2, Events::IN)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::from_millis(100))).unwrap(), 0);
    assert!(fds.iter().all(|fd| fd.revents.is_empty()));
    // A UDP socket is writable, bound or not (Linux).
    let fresh = udp(&p.b, Domain::Inet);
    let mut fds = [PollFd::new(&u1, Events::OUT), PollFd::new(&fresh, Events::IN | Events::OUT)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::ZERO)).unwrap(), 2);
    assert_eq!(fds[0].revents, Events::OUT);
    assert_eq!(fds[1].revents, Events::OUT);
}

#[test]
fn an_ipv6_wildcard_socket_talks_to_ipv4_through_v4_mapped_addresses() {
    let p = pair();
    let u = udp(&p.b, Domain::Inet6);
    u.bind(addr("::", 0)).unwrap();
    let port = u.local_addr().unwrap().port();
    let (tx4, from4) = bound(&p.a, A);
    tx4.send_to(b"v4", addr(B, port)).unwrap();
    let mut buf = [0; 8];
    let (n, from) = u.recv_from(&mut buf).unwrap();
    assert_eq!(n, 2);
    assert_eq!(from, sa(&format!("[::ffff:10.0.0.1]:{}", from4.port())));
    // Replies: to the mapped address, or (Linux) to a plain IPv4 sockaddr.
    u.send_to(b"mapped", from).unwrap();
    assert_eq!(tx4.recv_from(&mut buf).unwrap(), (6, addr(B, port)));
    u.send_to(b"plain", from4).unwrap();
    assert_eq!(tx4.recv_from(&mut buf).unwrap(), (5, addr(B, port)));
    let (tx6, from6) = bound(&p.a, A6);
    tx6.send_to(b"v6", addr(B6, port)).unwrap();
    assert_eq!(u.recv_from(&mut buf).unwrap(), (2, from6));
}

#[test]
fn an_ipv4_socket_does_not_receive_ipv6_datagrams() {
    let p = pair();
    let u = udp(&p.b, Domain::Inet);
    u.bind(addr("0.0.0.0", 0)).unwrap();
    let port = u.local_addr().unwrap().port();
    let (tx6, _) = bound(&p.a, A6);
    let (tx4, from4) = bound(&p.a, A);
    tx6.send_to(b"v6", addr(B6, port)).unwrap();
    tx4.send_to(b"v4", addr(B, port)).unwrap();
    let mut buf = [0; 8];
    assert_eq!(u.recv_from(&mut buf).unwrap(), (2, from4), "the IPv6 datagram is not for an AF_INET socket");
    assert_eq!(&buf[..2], b"v4");
}

#[test]
fn a_stack_sends_datagrams_to_its_own_addresses() {
    let p = pair();
    for ip in [B, B6] {
        let (rx, at) = bound(&p.b, ip);
        let (tx, from) = bound(&p.b, ip);
        tx.send_to(b"loop", at).unwrap();
        let mut buf = [0; 8];
        assert_eq!(rx.recv_from(&mut buf).unwrap(), (4, from));
        assert_eq!(&buf[..4], b"loop");
    }
}

/// Waits (up to [`WAIT`]) until `socket`'s blocked receive waits on `stack`'s device itself
/// (a blocked datagram receive does when no other call does; see `stack::drive`).
#[track_caller]
fn until_driving(stack: &ustack::Stack, socket: &Socket) {
    let deadline = Instant::now() + WAIT;
    while stack.driving() != Some(socket.id()) {
        assert!(Instant::now() < deadline, "the blocked receive never waited on the device");
        thread::yield_now();
    }
}

#[test]
fn while_a_blocked_recv_reads_the_device_other_sockets_get_their_packets() {
    // A blocked recvfrom reads the device itself and hands the stack what it reads: a
    // datagram for another socket still reaches it (and wakes poll()). The waiting call
    // then leaves the device to the stack thread (the traffic was not for it): a TCP
    // connection across the stack works meanwhile, and the call still gets its own
    // datagram in the end.
    let p = pair();
    let (waiting, waiting_at) = bound(&p.b, B);
    let (other, other_at) = bound(&p.b, B);
    let (tx, from) = bound(&p.a, A);
    waiting.set_read_timeout(Some(WAIT)).unwrap();
    other.set_nonblocking(true).unwrap();
    thread::scope(|scope| {
        let blocked = scope.spawn(|| {
            let mut buf = [0; 16];
            let (n, sender) = waiting.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), sender)
        });
        until_driving(&p.b, &waiting);
        tx.send_to(&[7; 10], other_at).unwrap();
        wait_for(&other, Events::IN);
        let mut buf = [0; 16];
        assert_eq!(other.recv_from(&mut buf).unwrap(), (10, from));
        assert_eq!(buf[..10], [7; 10]);
        let (client, server) = connection(&p, A, B);
        client.send(b"over tcp").unwrap();
        assert_eq!(recv_exact(&server, 8), b"over tcp");
        assert!(!blocked.is_finished(), "nothing was sent to the waiting socket yet");
        tx.send_to(b"yours", waiting_at).unwrap();
        assert_eq!(blocked.join().unwrap(), (b"yours".to_vec(), from));
    });
}

#[test]
fn a_blocked_recv_reading_the_device_gets_each_of_its_datagrams() {
    // Request after request to one socket, as a UDP server sees them, the server's
    // blocked receive waiting on the device from the first (both stacks' receives do,
    // the client's too): every datagram arrives, in order, none left unread until a timeout.
    let p = pair();
    let (server, server_at) = bound(&p.b, B);
    let (client, client_at) = bound(&p.a, A);
    server.set_read_timeout(Some(WAIT)).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = [0; 16];
            for _ in 0..100 {
                let (n, peer) = server.recv_from(&mut buf).unwrap();
                assert_eq!(peer, client_at);
                server.send_to(&buf[..n], peer).unwrap();
            }
        });
        for i in 0..100u32 {
            if i == 0 {
                until_driving(&p.b, &server);
            }
            client.send_to(&i.to_be_bytes(), server_at).unwrap();
            let mut buf = [0; 16];
            assert_eq!(client.recv_from(&mut buf).unwrap(), (4, server_at));
            assert_eq!(buf[..4], i.to_be_bytes());
        }
    });
}

#[test]
fn a_recv_waiting_on_the_device_fails_with_enetdown_when_the_stack_stops() {
    let Pair { a: _a, b } = pair();
    let (u, _) = bound(&b, B);
    u.set_read_timeout(Some(WAIT)).unwrap();
    let id = u.id();
    let blocked = thread::spawn(move || u.recv_from(&mut [0; 8]).map(|(n, _)| n));
    let deadline = Instant::now() + WAIT;
    while b.driving() != Some(id) {
        assert!(Instant::now() < deadline, "the blocked receive never waited on the device");
        thread::yield_now();
    }
    drop(b);
    assert_eq!(blocked.join().unwrap(), Err(Errno::ENETDOWN));
}
