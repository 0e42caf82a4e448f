//! The TCP half of the socket API over the in-memory wire: connect, accept, send, recv,
//! shutdown, close, listen backlogs, threads and dual-stack. Every errno is the one Linux
//! returns for the same call (checked against the kernel on loopback).

use ustack_testkit::inject::{inject, next_segment, tcp_flags};
use ustack_testkit::*;

use std::collections::HashSet;
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use smoltcp::socket::tcp::State;
use ustack::{Domain, Errno, Events, PollFd, Socket};

/// (client address on "a", server address on "b") for each family.
const FAMILIES: [(&str, &str); 2] = [(A, B), (A6, B6)];

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Makes `c`'s end reset the connection the way Linux does: `s` sends data that `c` never
/// reads, then `c` closes, which sends RST instead of FIN. Returns once `s` has seen it.
fn reset_by_peer(c: Socket, s: &Socket) {
    s.send(b"never read").unwrap();
    assert!(wait_for(&c, Events::IN).contains(Events::IN));
    c.close().unwrap();
    let seen = wait_for(s, Events::IN);
    assert!(seen.contains(Events::ERR), "the RST is a pending error: {seen:?}");
}

#[test]
fn connect_returns_established_and_accept_returns_the_peer() {
    let p = pair();
    for (a_ip, b_ip) in FAMILIES {
        let (l, at) = listener(&p.b, b_ip, 4);
        let c = tcp(&p.a, domain_of(a_ip));
        c.connect(at).unwrap();
        assert_eq!(c.tcp_state(), Some(State::Established), "connect() returns once ESTABLISHED");
        assert_eq!(c.peer_addr().unwrap(), at);
        let local = c.local_addr().unwrap();
        assert_eq!(local.ip().to_string(), a_ip, "getsockname() after connect() shows the source address");
        let (s, peer) = l.accept().unwrap();
        assert_eq!(peer, local, "accept() returns the client's address");
        assert_eq!(s.peer_addr().unwrap(), local);
        assert_eq!(s.local_addr().unwrap(), at);
        assert_eq!(s.tcp_state(), Some(State::Established));
        assert_eq!(c.send(b"ping").unwrap(), 4);
        assert_eq!(recv_exact(&s, 4), b"ping");
        assert_eq!(s.send(b"pong").unwrap(), 4);
        assert_eq!(recv_exact(&c, 4), b"pong");
        // sendto()/recvfrom() on a connected TCP socket: send()/recv() with the peer's address.
        assert_eq!(c.send_to(b"!", at).unwrap(), 1);
        let mut buf = [0; 8];
        assert_eq!(s.recv_from(&mut buf).unwrap(), (1, local));
        assert_eq!(&buf[..1], b"!");
    }
}

#[test]
fn connect_to_a_closed_port_is_refused_and_the_socket_may_try_again() {
    // Refused, not timed out: the peer's RST answers the SYN. When (one round trip, no
    // retransmission) is pinned on the virtual clock: tests/virtual_time.rs.
    let p = pair();
    for (a_ip, b_ip) in FAMILIES {
        let c = tcp(&p.a, domain_of(a_ip));
        assert_eq!(err(c.connect_timeout(addr(b_ip, 9), WAIT)), Errno::ECONNREFUSED);
        assert_eq!(err(c.peer_addr()), Errno::ENOTCONN);
        // As in Linux, the same socket may try again.
        assert_eq!(err(c.connect_timeout(addr(b_ip, 9), WAIT)), Errno::ECONNREFUSED);
        let l = tcp(&p.b, domain_of(b_ip));
        l.bind(addr(b_ip, 9)).unwrap();
        l.listen(1).unwrap();
        c.connect_timeout(addr(b_ip, 9), WAIT).unwrap();
        assert_eq!(l.accept().unwrap().1, c.local_addr().unwrap());
    }
}

#[test]
fn non_blocking_connect_to_a_host_that_never_answers_gives_up_with_etimedout() {
    // smoltcp would resend the SYN forever; the stack's connect timeout (Linux: 127 s)
    // ends the attempt for non-blocking sockets too, and the stack thread wakes poll().
    // When it ends (at the timeout, not before) is pinned on the virtual clock:
    // tests/virtual_time.rs.
    ustack_testkit::init_test_logging();
    let (end_a, _silent) = ustack::device::Wire::pair(1500).unwrap();
    let config = ustack::StackConfig { connect_timeout: Duration::from_millis(400), ..ustack_testkit::config(A, A6) };
    let stack = ustack::Stack::new(end_a, config).unwrap();
    let c = tcp(&stack, Domain::Inet);
    c.set_nonblocking(true).unwrap();
    assert_eq!(err(c.connect(addr(B, 80))), Errno::EINPROGRESS);
    let ready = wait_for(&c, Events::OUT);
    assert!(ready.contains(Events::ERR), "poll reports the failure: {ready:?}");
    assert_eq!(err(c.connect(addr(B, 80))), Errno::ETIMEDOUT);
}

#[test]
fn a_reset_during_a_long_send_is_reported_by_the_next_call() {
    // Linux reports the bytes queued before the RST, then ECONNRESET on the next send.
    let p = pair();
    let (client, server) = connection(&p, A, B);
    let sender = std::thread::spawn(move || {
        let first = client.send(&vec![0u8; 1 << 20]);
        (first, client.send(b"more"))
    });
    // Once data has arrived the send is under way, and 1 MiB cannot fit in the two 64 KiB
    // buffers of a server that never reads; closing with unread data resets the connection.
    wait_for(&server, Events::IN);
    drop(server);
    let (first, second) = sender.join().unwrap();
    let queued = first.expect("the bytes queued before the reset are reported");
    assert!(queued > 0 && queued < 1 << 20, "queued {queued}");
    assert_eq!(err(second), Errno::ECONNRESET);
}

#[test]
fn connect_to_a_host_that_never_answers_times_out() {
    let lone = lone_a();
    for ip in [B, B6] {
        // connect_timeout() is the socket layer's own wait, on the real clock: only its
        // outcome is checked. The engine's connect timeout is pinned in tests/virtual_time.rs.
        let c = tcp(&lone.stack, domain_of(ip));
        assert_eq!(err(c.connect_timeout(addr(ip, 80), Duration::from_millis(300))), Errno::ETIMEDOUT);
        assert_eq!(err(c.peer_addr()), Errno::ENOTCONN);
    }
    let mut syns = 0;
    while let Some(frame) = lone.wire.recv_raw() {
        syns += usize::from(tcp_flags(&frame).is_some_and(|f| f.syn));
    }
    assert!(syns >= 2, "a SYN went out for each attempt");
}

#[test]
fn nonblocking_connect_is_in_progress_then_poll_reports_writable() {
    let p = pair();
    for (a_ip, b_ip) in FAMILIES {
        let (l, at) = listener(&p.b, b_ip, 1);
        let c = tcp(&p.a, domain_of(a_ip));
        c.set_nonblocking(true).unwrap();
        assert_eq!(err(c.connect(at)), Errno::EINPROGRESS);
        let ready = wait_for(&c, Events::OUT);
        assert!(ready.contains(Events::OUT) && !ready.intersects(Events::ERR | Events::HUP), "{ready:?}");
        // Linux: the next connect() reports the outcome (success), later ones EISCONN.
        c.connect(at).unwrap();
        assert_eq!(err(c.connect(at)), Errno::EISCONN);
        assert_eq!(c.peer_addr().unwrap(), at);
        let (s, _) = l.accept().unwrap();
        c.send(b"hi").unwrap();
        assert_eq!(recv_exact(&s, 2), b"hi");
    }
}

#[test]
fn nonblocking_connect_in_progress_is_ealready_and_not_ready() {
    let lone = lone_a();
    let c = tcp(&lone.stack, Domain::Inet);
    c.set_nonblocking(true).unwrap();
    assert_eq!(err(c.connect(addr(B, 80))), Errno::EINPROGRESS);
    assert_eq!(err(c.connect(addr(B, 80))), Errno::EALREADY);
    assert_eq!(c.tcp_state(), Some(State::SynSent));
    let mut fds = [PollFd::new(&c, Events::IN | Events::OUT)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::from_millis(100))).unwrap(), 0, "nothing is ready in SYN-SENT");
    assert_eq!(err(c.send(b"x")), Errno::EAGAIN);
    assert_eq!(err(c.recv(&mut [0; 8])), Errno::EAGAIN);
    assert_eq!(err(c.peer_addr()), Errno::ENOTCONN);
}

#[test]
fn nonblocking_connect_refused_is_reported_by_poll_then_by_connect() {
    let p = pair();
    let c = tcp(&p.a, Domain::Inet);
    c.set_nonblocking(true).unwrap();
    assert_eq!(err(c.connect(addr(B, 9))), Errno::EINPROGRESS);
    let ready = wait_for(&c, Events::OUT);
    assert!(ready.contains(Events::ERR | Events::HUP), "{ready:?}");
    assert_eq!(err(c.connect(addr(B, 9))), Errno::ECONNREFUSED);
    // The error is reported once; the next connect() is a new attempt.
    assert_eq!(err(c.connect(addr(B, 9))), Errno::EINPROGRESS);
}

#[test]
fn connect_on_a_connected_or_listening_socket_is_eisconn() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    let at = c.peer_addr().unwrap();
    assert_eq!(err(c.connect(at)), Errno::EISCONN);
    assert_eq!(err(s.connect(addr(A, 9))), Errno::EISCONN, "an accepted socket is connected too");
    let (l, _) = listener(&p.a, A, 1);
    assert_eq!(err(l.connect(at)), Errno::EISCONN);
    // Still connected as far as connect() goes once the peer reset (Linux).
    reset_by_peer(s, &c);
    assert_eq!(err(c.connect(at)), Errno::EISCONN);
}

#[test]
fn accept_on_a_socket_that_is_not_listening() {
    let p = pair();
    let s = tcp(&p.b, Domain::Inet);
    assert_eq!(err(s.accept()), Errno::EINVAL, "unbound");
    s.bind(addr(B, 0)).unwrap();
    assert_eq!(err(s.accept()), Errno::EINVAL, "bound, not listening");
    let (c, _s) = connection(&p, A, B);
    assert_eq!(err(c.accept()), Errno::EINVAL, "connected");
}

#[test]
fn accept_nonblocking_and_with_timeout_give_eagain() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 1);
    // Non-blocking: EAGAIN at once, which is what not waiting means.
    l.set_nonblocking(true).unwrap();
    assert_eq!(err(l.accept()), Errno::EAGAIN);
    // Blocking with SO_RCVTIMEO: EAGAIN once it passes.
    l.set_nonblocking(false).unwrap();
    l.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert_eq!(err(l.accept()), Errno::EAGAIN);
    // It still works afterwards.
    l.set_read_timeout(Some(WAIT)).unwrap();
    let c = tcp(&p.a, Domain::Inet);
    c.connect(at).unwrap();
    assert_eq!(l.accept().unwrap().1, c.local_addr().unwrap());
}

#[test]
fn accept_blocks_until_a_client_connects() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 1);
    thread::scope(|scope| {
        let acceptor = scope.spawn(|| l.accept());
        let c = tcp(&p.a, Domain::Inet);
        c.connect(at).unwrap();
        let (s, peer) = acceptor.join().unwrap().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        s.send(b"welcome").unwrap();
        assert_eq!(recv_exact(&c, 7), b"welcome");
    });
}

#[test]
fn accept_returns_only_connections_that_completed_the_handshake() {
    // The test plays the client with raw segments, so it can stop half-way.
    let lone = lone_b();
    let (l, at) = listener(&lone.stack, B, 4);
    l.set_nonblocking(true).unwrap();
    inject(&lone.wire, 40000, at.port(), 1000, None, true);
    let syn_ack = next_segment(&lone.wire);
    assert!(syn_ack.syn && syn_ack.ack && !syn_ack.rst && syn_ack.ack_no == 1001);
    assert_eq!(l.listen_queues(), Some((1, 0, 0)), "half-open: in the SYN queue");
    assert_eq!(err(l.accept()), Errno::EAGAIN, "a half-open connection is not accepted");
    let mut fds = [PollFd::new(&l, Events::IN)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0, "nor is the listener readable");
    inject(&lone.wire, 40000, at.port(), 1001, Some(syn_ack.seq.wrapping_add(1)), false);
    assert!(wait_for(&l, Events::IN).contains(Events::IN));
    let (s, peer) = l.accept().unwrap();
    assert_eq!(peer, addr(A, 40000));
    assert_eq!(s.tcp_state(), Some(State::Established));
    assert_eq!(l.listen_queues(), Some((0, 0, 0)));
}

#[test]
fn recv_waits_for_data() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    s.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
    assert_eq!(err(s.recv(&mut [0; 64])), Errno::EAGAIN, "nothing arrived within SO_RCVTIMEO");
    s.set_read_timeout(Some(WAIT)).unwrap();
    thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut buf = [0; 64];
            let n = s.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        c.send(b"wake up").unwrap();
        assert_eq!(reader.join().unwrap(), b"wake up");
    });
    // recv() returns what is there, up to the buffer's size.
    c.send(b"0123456789").unwrap();
    assert!(wait_for(&s, Events::IN).contains(Events::IN));
    let mut small = [0; 4];
    assert_eq!(s.recv(&mut small).unwrap(), 4);
    assert_eq!(&small, b"0123");
    assert_eq!(recv_exact(&s, 6), b"456789");
}

#[test]
fn recv_returns_zero_at_end_of_stream() {
    let p = pair();
    for (a_ip, b_ip) in FAMILIES {
        let (c, s) = connection(&p, a_ip, b_ip);
        c.send(b"last words").unwrap();
        c.close().unwrap();
        assert_eq!(recv_exact(&s, 10), b"last words");
        assert_eq!(s.recv(&mut [0; 16]).unwrap(), 0, "EOF");
        assert_eq!(s.recv(&mut [0; 16]).unwrap(), 0, "and EOF again");
        assert!(wait_for(&s, Events::IN).contains(Events::IN), "EOF makes the socket readable");
    }
}

#[test]
fn send_after_the_peer_reset_is_econnreset_then_epipe() {
    let p = pair();
    for (a_ip, b_ip) in FAMILIES {
        let (c, s) = connection(&p, a_ip, b_ip);
        reset_by_peer(c, &s);
        assert_eq!(err(s.send(b"x")), Errno::ECONNRESET);
        assert_eq!(err(s.send(b"x")), Errno::EPIPE);
        assert_eq!(s.recv(&mut [0; 16]).unwrap(), 0, "the error was reported; recv() sees EOF");
        assert_eq!(err(s.peer_addr()), Errno::ENOTCONN);
        assert_eq!(err(s.shutdown(Shutdown::Write)), Errno::ENOTCONN);
    }
}

#[test]
fn recv_after_the_peer_reset_is_econnreset_then_eof() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    reset_by_peer(c, &s);
    assert_eq!(err(s.recv(&mut [0; 16])), Errno::ECONNRESET);
    assert_eq!(s.recv(&mut [0; 16]).unwrap(), 0);
    assert_eq!(s.recv_from(&mut [0; 16]).unwrap().0, 0, "recvfrom() sees EOF too, not ENOTCONN");
    assert_eq!(err(s.send(b"x")), Errno::EPIPE);
}

#[test]
fn recv_nonblocking_is_eagain_and_unconnected_is_enotconn() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    c.set_nonblocking(true).unwrap();
    assert_eq!(err(c.recv(&mut [0; 16])), Errno::EAGAIN);
    assert_eq!(err(c.recv(&mut [])), Errno::EAGAIN, "even for an empty buffer (Linux)");
    s.send(b"now").unwrap();
    assert!(wait_for(&c, Events::IN).contains(Events::IN));
    assert_eq!(c.recv(&mut [0; 16]).unwrap(), 3);
    let fresh = tcp(&p.a, Domain::Inet);
    assert_eq!(err(fresh.recv(&mut [0; 16])), Errno::ENOTCONN);
    fresh.bind(addr(A, 0)).unwrap();
    assert_eq!(err(fresh.recv(&mut [0; 16])), Errno::ENOTCONN);
    fresh.listen(1).unwrap();
    assert_eq!(err(fresh.recv(&mut [0; 16])), Errno::ENOTCONN);
    assert_eq!(err(fresh.recv_from(&mut [0; 16])), Errno::ENOTCONN);
}

#[test]
fn send_on_an_unconnected_tcp_socket_is_epipe() {
    let p = pair();
    let s = tcp(&p.a, Domain::Inet);
    assert_eq!(err(s.send(b"x")), Errno::EPIPE);
    assert_eq!(err(s.send_to(b"x", addr(B, 80))), Errno::EPIPE, "sendto() does not connect TCP");
    s.bind(addr(A, 0)).unwrap();
    assert_eq!(err(s.send(b"x")), Errno::EPIPE);
    s.listen(1).unwrap();
    assert_eq!(err(s.send(b"x")), Errno::EPIPE);
}

#[test]
fn shutdown_write_sends_fin_and_the_socket_still_receives() {
    let p = pair();
    for (a_ip, b_ip) in FAMILIES {
        let (c, s) = connection(&p, a_ip, b_ip);
        c.send(b"request").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(err(c.send(b"more")), Errno::EPIPE);
        assert_eq!(err(c.send(b"more")), Errno::EPIPE);
        c.shutdown(Shutdown::Write).unwrap(); // again: no error (Linux)
        // The server reads the request up to EOF, then answers on its still-open half.
        let mut request = Vec::new();
        let mut buf = [0; 64];
        loop {
            let n = s.recv(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        assert_eq!(request, b"request");
        s.send(b"reply").unwrap();
        s.close().unwrap();
        assert_eq!(recv_exact(&c, 5), b"reply");
        assert_eq!(c.recv(&mut buf).unwrap(), 0);
    }
}

#[test]
fn shutdown_read_makes_recv_return_eof_without_waiting() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    // Data already received is still returned first (Linux), then EOF.
    s.send(b"queued").unwrap();
    assert!(wait_for(&c, Events::IN).contains(Events::IN));
    c.shutdown(Shutdown::Read).unwrap();
    assert_eq!(recv_exact(&c, 6), b"queued");
    // 0, not EAGAIN after SO_RCVTIMEO: recv() did not wait (the peer sent no FIN).
    assert_eq!(c.recv(&mut [0; 16]).unwrap(), 0);
    // The write half is untouched.
    c.send(b"still talking").unwrap();
    assert_eq!(recv_exact(&s, 13), b"still talking");
}

#[test]
fn shutdown_from_another_thread_wakes_a_blocked_recv() {
    let p = pair();
    let (c, _s) = connection(&p, A, B);
    thread::scope(|scope| {
        let reader = scope.spawn(|| c.recv(&mut [0; 16]));
        c.shutdown(Shutdown::Both).unwrap();
        assert_eq!(reader.join().unwrap(), Ok(0));
    });
}

#[test]
fn shutdown_of_an_unconnected_socket_is_enotconn() {
    let p = pair();
    let s = tcp(&p.a, Domain::Inet);
    for how in [Shutdown::Read, Shutdown::Write, Shutdown::Both] {
        assert_eq!(err(s.shutdown(how)), Errno::ENOTCONN);
    }
    s.bind(addr(A, 0)).unwrap();
    assert_eq!(err(s.shutdown(Shutdown::Both)), Errno::ENOTCONN);
}

#[test]
fn shutdown_of_a_listener_stops_it_and_wakes_accept() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 4);
    // SHUT_WR means nothing to a listener (Linux returns 0): it still accepts.
    l.shutdown(Shutdown::Write).unwrap();
    let c = tcp(&p.a, Domain::Inet);
    c.connect(at).unwrap();
    assert_eq!(l.accept().unwrap().1, c.local_addr().unwrap());
    // SHUT_RD stops listening: a thread blocked in accept() gets EINVAL — the way a
    // Linux server wakes its accept loop to quit.
    thread::scope(|scope| {
        let acceptor = scope.spawn(|| l.accept().map(|(_, peer)| peer));
        l.shutdown(Shutdown::Both).unwrap();
        assert_eq!(acceptor.join().unwrap(), Err(Errno::EINVAL));
    });
    assert_eq!(err(l.accept()), Errno::EINVAL);
    assert_eq!(l.tcp_state(), None, "no longer listening");
    let c = tcp(&p.a, Domain::Inet);
    assert_eq!(err(c.connect_timeout(at, WAIT)), Errno::ECONNREFUSED);
}

#[test]
fn close_returns_at_once_and_the_peer_reads_everything_then_eof() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    // More than the server's 64 KiB receive buffer, which it reads only after close() has
    // returned: close() returns with data that cannot have left yet, so it does not wait
    // for the data to go out.
    let data = ustack_testkit::pattern(100_000, 7);
    assert_eq!(c.send(&data).unwrap(), data.len());
    c.close().unwrap();
    assert!(recv_exact(&s, data.len()) == data, "every byte sent before close() arrives");
    assert_eq!(s.recv(&mut [0; 16]).unwrap(), 0);
}

#[test]
fn the_server_port_is_held_in_time_wait_until_reuse_address() {
    let p = pair();
    // A server with SO_REUSEADDR, as servers set it (Linux needs it on both sockets).
    let l = tcp(&p.b, Domain::Inet);
    l.set_reuse_address(true).unwrap();
    l.bind(addr(B, 0)).unwrap();
    l.listen(1).unwrap();
    let at = l.local_addr().unwrap();
    let c = tcp(&p.a, Domain::Inet);
    c.connect(at).unwrap();
    let (s, _) = l.accept().unwrap();
    // The server closes first, so its side of the connection ends in TIME-WAIT.
    s.close().unwrap();
    assert_eq!(c.recv(&mut [0; 16]).unwrap(), 0);
    c.shutdown(Shutdown::Write).unwrap();
    eventually("the client's LAST-ACK is acknowledged", || c.tcp_state() == Some(State::Closed));
    l.close().unwrap();
    let again = tcp(&p.b, Domain::Inet);
    assert_eq!(err(again.bind(at)), Errno::EADDRINUSE, "TIME-WAIT holds the port");
    let wildcard = tcp(&p.b, Domain::Inet);
    assert_eq!(err(wildcard.bind(addr("0.0.0.0", at.port()))), Errno::EADDRINUSE);
    let restarted = tcp(&p.b, Domain::Inet);
    restarted.set_reuse_address(true).unwrap();
    restarted.bind(at).unwrap();
    restarted.listen(1).unwrap();
    let c = tcp(&p.a, Domain::Inet);
    c.connect(at).unwrap();
    assert_eq!(restarted.accept().unwrap().1, c.local_addr().unwrap());
}

#[test]
fn reuse_address_needs_to_be_set_on_the_old_socket_too() {
    let p = pair();
    for old_reuse in [false, true] {
        let l = tcp(&p.b, Domain::Inet);
        l.set_reuse_address(old_reuse).unwrap();
        l.bind(addr(B, 0)).unwrap();
        l.listen(1).unwrap();
        let at = l.local_addr().unwrap();
        let c = tcp(&p.a, Domain::Inet);
        c.connect(at).unwrap();
        let (_s, _) = l.accept().unwrap();
        l.close().unwrap(); // the accepted connection still holds the port
        let again = tcp(&p.b, Domain::Inet);
        again.set_reuse_address(true).unwrap();
        if old_reuse {
            again.bind(at).unwrap();
            again.listen(1).unwrap();
        } else {
            assert_eq!(err(again.bind(at)), Errno::EADDRINUSE, "the old listener had no SO_REUSEADDR (Linux)");
        }
    }
}

#[test]
fn the_client_port_is_held_in_time_wait() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 1);
    let c = tcp(&p.a, Domain::Inet);
    c.bind(addr(A, 0)).unwrap();
    let mine = c.local_addr().unwrap();
    c.connect(at).unwrap();
    let (s, _) = l.accept().unwrap();
    c.close().unwrap(); // the client closes first: TIME-WAIT on its side
    assert_eq!(s.recv(&mut [0; 16]).unwrap(), 0);
    s.close().unwrap();
    let again = tcp(&p.a, Domain::Inet);
    assert_eq!(err(again.bind(mine)), Errno::EADDRINUSE);
}

#[test]
fn try_clone_keeps_the_connection_open_until_the_last_handle_closes() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    let dup = c.try_clone().unwrap();
    c.close().unwrap();
    assert_eq!(err(c.send(b"x")), Errno::EBADF, "the closed handle is gone");
    dup.send(b"still here").unwrap();
    assert_eq!(recv_exact(&s, 10), b"still here");
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert_eq!(err(s.recv(&mut [0; 16])), Errno::EAGAIN, "no FIN while a handle is open");
    s.send(b"hello dup").unwrap();
    assert_eq!(recv_exact(&dup, 9), b"hello dup");
    drop(dup); // dropping the last handle closes, like close()
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(s.recv(&mut [0; 16]).unwrap(), 0);
}

#[test]
fn backlog_32_admits_32_concurrent_clients_and_accept_returns_them_all() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 32);
    let clients: Vec<Socket> = thread::scope(|scope| {
        let attempts: Vec<_> = (0..32)
            .map(|_| {
                scope.spawn(|| {
                    let c = tcp(&p.a, Domain::Inet);
                    c.connect_timeout(at, WAIT).map(|()| c)
                })
            })
            .collect();
        attempts.into_iter().map(|t| t.join().unwrap().expect("every client gets in, none is reset")).collect()
    });
    let mut expected: HashSet<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    assert_eq!(expected.len(), 32);
    for _ in 0..32 {
        let (_s, peer) = l.accept().unwrap();
        assert!(expected.remove(&peer), "{peer} accepted twice or unknown");
    }
    let (syn, accept, dropped) = l.listen_queues().unwrap();
    assert_eq!((syn, accept, dropped), (0, 0, 0), "nothing left, nothing dropped");
}

#[test]
fn backlog_1_completes_two_handshakes_and_the_third_waits_for_accept() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 1);
    let c1 = tcp(&p.a, Domain::Inet);
    c1.connect_timeout(at, WAIT).unwrap();
    let c2 = tcp(&p.a, Domain::Inet);
    c2.connect_timeout(at, WAIT).unwrap();
    eventually("both handshakes complete at the listener", || l.listen_queues().unwrap().1 == 2);
    thread::scope(|scope| {
        let third = scope.spawn(|| {
            let c3 = tcp(&p.a, Domain::Inet);
            let result = c3.connect_timeout(at, WAIT);
            (c3, result)
        });
        eventually("the third client's SYN is dropped", || l.listen_queues().unwrap().2 >= 1);
        assert_eq!(l.listen_queues().unwrap().1, 2, "the accept queue holds backlog + 1");
        assert!(!third.is_finished(), "the third client is not refused: it keeps trying");
        let (_s1, peer1) = l.accept().unwrap();
        assert_eq!(peer1, c1.local_addr().unwrap());
        let (c3, result) = third.join().unwrap();
        result.expect("the third client gets in once accept() made room");
        assert_eq!(l.accept().unwrap().1, c2.local_addr().unwrap());
        assert_eq!(l.accept().unwrap().1, c3.local_addr().unwrap());
    });
}

#[test]
fn backlog_full_the_third_client_times_out_instead_of_being_refused() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 1);
    let _c1 = tcp(&p.a, Domain::Inet);
    _c1.connect_timeout(at, WAIT).unwrap();
    let _c2 = tcp(&p.a, Domain::Inet);
    _c2.connect_timeout(at, WAIT).unwrap();
    eventually("both handshakes complete at the listener", || l.listen_queues().unwrap().1 == 2);
    let c3 = tcp(&p.a, Domain::Inet);
    assert_eq!(err(c3.connect_timeout(at, Duration::from_millis(1500))), Errno::ETIMEDOUT);
    let (_, accept, dropped) = l.listen_queues().unwrap();
    assert_eq!(accept, 2);
    // Its SYN was dropped, counted. That the retransmission at 1 s is dropped too, and the
    // timeout comes at 1.5 s, is pinned on the virtual clock (tests/virtual_time.rs): here,
    // on the real clock, a slow machine may not get to the retransmission in time.
    assert!(dropped >= 1, "the SYN was dropped ({dropped})");
}

#[test]
fn ephemeral_ports_are_in_range_distinct_and_random() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 64);
    let mut ports = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..24 {
        let c = tcp(&p.a, Domain::Inet);
        c.connect(at).unwrap();
        ports.push(c.local_addr().unwrap().port());
        keep.push((c, l.accept().unwrap().0));
    }
    assert!(ports.iter().all(|p| (49152..=65535).contains(p)), "{ports:?}");
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), ports.len(), "distinct: {ports:?}");
    let sequential = ports.windows(2).filter(|w| w[1].wrapping_sub(w[0]) == 1).count();
    assert!(sequential < ports.len() / 2, "ports are not handed out in sequence: {ports:?}");
    // bind() to port 0 picks from the same range, for each family and type.
    for ip in ["0.0.0.0", A, "::", A6] {
        for s in [tcp(&p.a, domain_of(ip)), udp(&p.a, domain_of(ip))] {
            s.bind(addr(ip, 0)).unwrap();
            let port = s.local_addr().unwrap().port();
            assert!((49152..=65535).contains(&port), "{ip}: {port}");
        }
    }
}

#[test]
fn two_threads_per_connection_chat_both_ways() {
    const N: usize = 200;
    let p = pair();
    let (c, s) = connection(&p, A, B);
    let msg = |who: &str, i: usize| format!("{who} {i:>8}\n").into_bytes(); // 16 bytes
    thread::scope(|scope| {
        // Server: one thread blocked in recv() on a dup'ed handle, one answering.
        let (tx, rx) = mpsc::channel();
        let s_reader = s.try_clone().unwrap();
        scope.spawn(move || {
            for _ in 0..N {
                tx.send(recv_exact(&s_reader, 16)).unwrap();
            }
        });
        let s = &s;
        scope.spawn(move || {
            for i in 0..N {
                let line = rx.recv_timeout(WAIT).expect("the server's reader hears the client");
                assert_eq!(line, msg("client", i));
                s.send(&msg("server", i)).unwrap();
            }
        });
        // Client: a reader thread blocked in recv() while this thread sends.
        let c_reader = c.try_clone().unwrap();
        let replies = scope.spawn(move || (0..N).map(|_| recv_exact(&c_reader, 16)).collect::<Vec<_>>());
        for i in 0..N {
            c.send(&msg("client", i)).unwrap();
        }
        let replies = replies.join().unwrap();
        assert_eq!(replies, (0..N).map(|i| msg("server", i)).collect::<Vec<_>>());
    });
}

#[test]
fn an_ipv6_wildcard_listener_accepts_ipv4_clients_as_v4_mapped() {
    let p = pair();
    let l = tcp(&p.b, Domain::Inet6);
    l.bind(addr("::", 0)).unwrap();
    l.listen(4).unwrap();
    let port = l.local_addr().unwrap().port();
    let c = tcp(&p.a, Domain::Inet);
    c.connect(addr(B, port)).unwrap();
    let (s, peer) = l.accept().unwrap();
    let cport = c.local_addr().unwrap().port();
    assert_eq!(peer, sa(&format!("[::ffff:10.0.0.1]:{cport}")));
    assert_eq!(s.peer_addr().unwrap(), peer);
    assert_eq!(s.local_addr().unwrap(), sa(&format!("[::ffff:10.0.0.2]:{port}")));
    c.send(b"v4").unwrap();
    assert_eq!(recv_exact(&s, 2), b"v4");
    // The same listener takes IPv6 clients as they are.
    let c6 = tcp(&p.a, Domain::Inet6);
    c6.connect(addr(B6, port)).unwrap();
    assert_eq!(l.accept().unwrap().1, c6.local_addr().unwrap());
    // An AF_INET6 client reaches an IPv4 listener through a v4-mapped address.
    let (l4, at4) = listener(&p.b, B, 1);
    let c = tcp(&p.a, Domain::Inet6);
    let mapped = sa(&format!("[::ffff:10.0.0.2]:{}", at4.port()));
    c.connect(mapped).unwrap();
    assert_eq!(c.peer_addr().unwrap(), mapped);
    let local = c.local_addr().unwrap();
    assert_eq!(local.ip().to_string(), "::ffff:10.0.0.1");
    assert_eq!(l4.accept().unwrap().1, addr(A, local.port()));
    // A listener on fd00::2 alone does not take IPv4.
    let (_l6, at6) = listener(&p.b, B6, 1);
    let c = tcp(&p.a, Domain::Inet);
    assert_eq!(err(c.connect_timeout(addr(B, at6.port()), WAIT)), Errno::ECONNREFUSED);
}

#[test]
fn a_stack_connects_to_its_own_addresses() {
    // As Linux routes a host's own addresses through `lo`: nothing goes on the wire.
    let p = pair();
    for ip in [B, B6] {
        let (l, at) = listener(&p.b, ip, 1);
        let c = tcp(&p.b, domain_of(ip));
        c.connect_timeout(at, WAIT).unwrap();
        let (s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        assert_eq!(peer.ip().to_string(), ip);
        c.send(b"to myself").unwrap();
        assert_eq!(recv_exact(&s, 9), b"to myself");
        s.send(b"from myself").unwrap();
        assert_eq!(recv_exact(&c, 11), b"from myself");
        c.close().unwrap();
        assert_eq!(s.recv(&mut [0; 8]).unwrap(), 0);
        let refused = tcp(&p.b, domain_of(ip));
        assert_eq!(err(refused.connect_timeout(addr(ip, 9), WAIT)), Errno::ECONNREFUSED);
    }
}

#[test]
fn send_nonblocking_fills_the_buffers_then_eagain_until_the_peer_reads() {
    // Without autotuning: the send buffer would grow with the congestion window, and the
    // receive window's 128-byte units (for a 6 MiB buffer) leave up to 127 bytes unfilled.
    let fixed =
        |c: ustack::StackConfig| ustack::StackConfig { tcp_receive_max: c.tcp_buffer, tcp_send_max: c.tcp_buffer, ..c };
    let p = pair_with(fixed(config(A, A6)), fixed(config(B, B6)));
    let (c, s) = connection(&p, A, B);
    c.set_nonblocking(true).unwrap();
    let chunk = vec![0x5a; 16 * 1024];
    // Our send buffer and the peer's receive buffer hold 64 KiB each. Until both are full,
    // room opens up after each EAGAIN as the peer acknowledges what moved into its window.
    let full = 2 * ustack::StackConfig::default().tcp_buffer;
    let mut queued = 0;
    while queued < full {
        match c.send(&chunk) {
            Ok(n) => queued += n,
            Err(e) => {
                assert_eq!(e, Errno::EAGAIN);
                assert!(wait_for(&c, Events::OUT).contains(Events::OUT), "room opens up, {queued} queued");
            }
        }
    }
    assert_eq!(queued, full);
    // Then nothing fits, and the socket is not writable.
    assert_eq!(err(c.send(&chunk)), Errno::EAGAIN);
    let mut fds = [PollFd::new(&c, Events::OUT)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
    // Blocking with SO_SNDTIMEO: nothing fits, so EAGAIN after the timeout (Linux).
    c.set_nonblocking(false).unwrap();
    c.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
    assert_eq!(err(c.send(&chunk)), Errno::EAGAIN);
    // The peer reads everything: the socket becomes writable again.
    assert_eq!(recv_exact(&s, queued).len(), queued);
    assert!(wait_for(&c, Events::OUT).contains(Events::OUT));
    c.set_write_timeout(Some(WAIT)).unwrap();
    assert_eq!(c.send(b"more").unwrap(), 4);
    assert_eq!(recv_exact(&s, 4), b"more");
}

#[test]
fn listen_binds_an_unbound_socket_and_may_be_called_again() {
    let p = pair();
    let l = tcp(&p.b, Domain::Inet);
    l.listen(1).unwrap();
    let port = l.local_addr().unwrap().port();
    assert!((49152..=65535).contains(&port), "listen() bound an ephemeral port: {port}");
    l.listen(8).unwrap(); // a second listen() only changes the backlog (Linux)
    let c = tcp(&p.a, Domain::Inet);
    c.connect(addr(B, port)).unwrap();
    let (s, _) = l.accept().unwrap();
    assert_eq!(err(c.listen(1)), Errno::EINVAL, "a connected socket cannot listen");
    assert_eq!(err(s.listen(1)), Errno::EINVAL);
}

#[test]
fn stack_shutdown_closes_every_socket_as_a_process_exit_does() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 4);
    let (c, s) = {
        let c = tcp(&p.a, domain_of(B));
        c.connect(at).unwrap();
        (c, l.accept().unwrap().0)
    };
    let queued = tcp(&p.a, domain_of(B));
    queued.connect(at).unwrap(); // established, waiting in the accept queue
    assert_eq!(p.b.shutdown(WAIT), 0, "every FIN exchange finished in time");
    assert_eq!(c.recv(&mut [0; 8]).unwrap(), 0, "an established connection ends with FIN");
    assert_eq!(err(queued.recv(&mut [0; 8])), Errno::ECONNRESET, "a queued one is reset, as Linux resets it");
    assert_eq!(err(s.send(b"late")), Errno::EBADF, "the server's handles are gone");
    assert_eq!(err(l.accept()), Errno::EBADF);
}
