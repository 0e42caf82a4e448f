//! Errno cases shared by TCP and UDP: ports and addresses, address families, use after
//! close, poll() basics, and the conversion to std::io::Error. Linux is the oracle.

use ustack_testkit::*;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::Duration;

use ustack::{Domain, Errno, Events, PollFd, Socket, TcpListener, TcpStream, Type, UdpSocket};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_second_bind_to_a_port_in_use_is_eaddrinuse() {
    let p = pair();
    for ty in [Type::Stream, Type::Dgram] {
        let first = sock(&p.b, Domain::Inet, ty);
        first.bind(addr(B, 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        // (address of a second socket, does it conflict?) — as Linux decides.
        let cases = [
            (B.to_string(), true),
            ("0.0.0.0".to_string(), true),
            ("::".to_string(), true), // [::] is dual-stack: it covers 10.0.0.2
            (B6.to_string(), false),
        ];
        for (ip, conflicts) in cases {
            let second = sock(&p.b, domain_of(&ip), ty);
            let result = second.bind(addr(&ip, port));
            if conflicts {
                assert_eq!(result, Err(Errno::EADDRINUSE), "{ty:?} {ip} over {B}");
            } else {
                assert_eq!(result, Ok(()), "{ty:?} {ip} over {B}");
            }
        }
        // The other direction: a wildcard holds every address of the port.
        let wild = sock(&p.b, Domain::Inet6, ty);
        wild.bind(addr("::", 0)).unwrap();
        let port = wild.local_addr().unwrap().port();
        for ip in [B, "0.0.0.0", B6, "::"] {
            let second = sock(&p.b, domain_of(ip), ty);
            assert_eq!(second.bind(addr(ip, port)), Err(Errno::EADDRINUSE), "{ty:?} {ip} over [::]");
        }
        let wild4 = sock(&p.b, Domain::Inet, ty);
        wild4.bind(addr("0.0.0.0", 0)).unwrap();
        let port = wild4.local_addr().unwrap().port();
        let second = sock(&p.b, Domain::Inet6, ty);
        assert_eq!(second.bind(addr("::", port)), Err(Errno::EADDRINUSE), "{ty:?} [::] over 0.0.0.0");
    }
    // TCP and UDP ports are separate.
    let t = sock(&p.b, Domain::Inet, Type::Stream);
    t.bind(addr(B, 0)).unwrap();
    let u = sock(&p.b, Domain::Inet, Type::Dgram);
    u.bind(t.local_addr().unwrap()).unwrap();
}

#[test]
fn a_listening_or_connected_port_is_in_use_even_with_reuse_address() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 1);
    let s = tcp(&p.b, Domain::Inet);
    s.set_reuse_address(true).unwrap();
    assert_eq!(err(s.bind(at)), Errno::EADDRINUSE, "SO_REUSEADDR never binds over a listener");
    // A port that an unaccepted connection's client side uses.
    let c = tcp(&p.a, Domain::Inet);
    c.connect(at).unwrap();
    let other = tcp(&p.a, Domain::Inet);
    assert_eq!(err(other.bind(c.local_addr().unwrap())), Errno::EADDRINUSE);
    drop(l);
}

#[test]
fn bind_to_an_address_the_stack_does_not_have_is_eaddrnotavail() {
    let p = pair();
    for ty in [Type::Stream, Type::Dgram] {
        for ip in [A, "10.0.0.99", A6, "fd00::99"] {
            let s = sock(&p.b, domain_of(ip), ty);
            assert_eq!(err(s.bind(addr(ip, 4000))), Errno::EADDRNOTAVAIL, "{ty:?} {ip}");
            // A failed bind leaves the socket unbound.
            s.bind(addr(if ip.contains(':') { B6 } else { B }, 0)).unwrap();
        }
    }
}

#[test]
fn bind_twice_is_einval() {
    let p = pair();
    for ty in [Type::Stream, Type::Dgram] {
        let s = sock(&p.a, Domain::Inet, ty);
        s.bind(addr(A, 0)).unwrap();
        let at = s.local_addr().unwrap();
        assert_eq!(err(s.bind(addr(A, 0))), Errno::EINVAL);
        assert_eq!(err(s.bind(at)), Errno::EINVAL);
        assert_eq!(s.local_addr().unwrap(), at, "the first binding stays");
    }
    // Implicit binds count: after connect() or listen() the socket is bound.
    let (l, at) = listener(&p.b, B, 1);
    assert_eq!(err(l.bind(addr(B, 0))), Errno::EINVAL);
    let c = tcp(&p.a, Domain::Inet);
    c.connect(at).unwrap();
    assert_eq!(err(c.bind(addr(A, 0))), Errno::EINVAL);
}

#[test]
fn the_wrong_address_family() {
    let p = pair();
    // An AF_INET socket given an IPv6 address: EAFNOSUPPORT, for every call.
    for ty in [Type::Stream, Type::Dgram] {
        let s = sock(&p.a, Domain::Inet, ty);
        assert_eq!(err(s.bind(addr(A6, 0))), Errno::EAFNOSUPPORT);
        assert_eq!(err(s.bind(addr("::ffff:10.0.0.1", 0))), Errno::EAFNOSUPPORT);
        assert_eq!(err(s.connect(addr(B6, 80))), Errno::EAFNOSUPPORT);
        assert_eq!(err(s.connect(addr("::ffff:10.0.0.2", 80))), Errno::EAFNOSUPPORT);
    }
    let u = sock(&p.a, Domain::Inet, Type::Dgram);
    assert_eq!(err(u.send_to(b"x", addr(B6, 80))), Errno::EAFNOSUPPORT);
    // An AF_INET6 socket given an IPv4 sockaddr (shorter than sockaddr_in6): Linux says
    // EINVAL for bind() and TCP connect() ...
    for ty in [Type::Stream, Type::Dgram] {
        let s = sock(&p.a, Domain::Inet6, ty);
        assert_eq!(err(s.bind(addr(A, 0))), Errno::EINVAL, "{ty:?}");
    }
    let t = tcp(&p.a, Domain::Inet6);
    assert_eq!(err(t.connect(addr(B, 80))), Errno::EINVAL);
    // ... while UDP's connect() and sendto() take it as IPv4 (dual-stack), as with
    // a v4-mapped address.
    let rx = sock(&p.b, Domain::Inet, Type::Dgram);
    rx.bind(addr(B, 0)).unwrap();
    let at = rx.local_addr().unwrap();
    let u6 = sock(&p.a, Domain::Inet6, Type::Dgram);
    u6.send_to(b"sendto", at).unwrap();
    let mut buf = [0; 16];
    let (n, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"sendto");
    assert_eq!(from.ip().to_string(), A);
    u6.connect(at).unwrap();
    assert_eq!(u6.peer_addr().unwrap(), sa(&format!("[::ffff:10.0.0.2]:{}", at.port())));
    u6.send(b"connected").unwrap();
    assert_eq!(rx.recv_from(&mut buf).unwrap(), (9, from));
}

#[test]
fn every_call_after_close_is_ebadf() {
    let p = pair();
    for ty in [Type::Stream, Type::Dgram] {
        let s = sock(&p.a, Domain::Inet, ty);
        s.close().unwrap();
        let mut buf = [0; 8];
        assert_eq!(err(s.close()), Errno::EBADF, "close twice");
        assert_eq!(err(s.bind(addr(A, 0))), Errno::EBADF);
        assert_eq!(err(s.listen(1)), Errno::EBADF);
        assert_eq!(err(s.accept()), Errno::EBADF);
        assert_eq!(err(s.connect(addr(B, 80))), Errno::EBADF);
        assert_eq!(err(s.send(b"x")), Errno::EBADF);
        assert_eq!(err(s.send_to(b"x", addr(B, 80))), Errno::EBADF);
        assert_eq!(err(s.recv(&mut buf)), Errno::EBADF);
        assert_eq!(err(s.recv_from(&mut buf)), Errno::EBADF);
        assert_eq!(err(s.shutdown(Shutdown::Both)), Errno::EBADF);
        assert_eq!(err(s.local_addr()), Errno::EBADF);
        assert_eq!(err(s.peer_addr()), Errno::EBADF);
        assert_eq!(err(s.try_clone()), Errno::EBADF);
        assert_eq!(err(s.set_nonblocking(true)), Errno::EBADF);
        assert_eq!(err(s.set_read_timeout(None)), Errno::EBADF);
    }
    // A connected socket closed under a thread blocked in recv() on the same handle.
    let (c, _s) = connection(&p, A, B);
    let closed = c.try_clone().unwrap();
    closed.close().unwrap();
    assert_eq!(err(closed.recv(&mut [0; 8])), Errno::EBADF);
    c.send(b"the dup is open").unwrap();
}

#[test]
fn close_frees_the_port() {
    let p = pair();
    for ty in [Type::Stream, Type::Dgram] {
        let s = sock(&p.a, Domain::Inet, ty);
        s.bind(addr(A, 0)).unwrap();
        let at = s.local_addr().unwrap();
        s.close().unwrap();
        let again = sock(&p.a, Domain::Inet, ty);
        again.bind(at).unwrap();
    }
    let (l, at) = listener(&p.b, B, 1);
    drop(l);
    let again = tcp(&p.b, Domain::Inet);
    again.bind(at).unwrap();
    again.listen(1).unwrap();
}

#[test]
fn poll_reports_a_pending_connection_as_readable() {
    let p = pair();
    let (l, at) = listener(&p.b, B, 4);
    let (l2, _) = listener(&p.b, B, 4);
    let mut fds = [PollFd::new(&l, Events::IN), PollFd::new(&l2, Events::IN)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
    thread::scope(|scope| {
        let client = scope.spawn(|| {
            let c = tcp(&p.a, Domain::Inet);
            c.connect(at).map(|()| c)
        });
        let mut fds = [PollFd::new(&l, Events::IN), PollFd::new(&l2, Events::IN)];
        assert_eq!(ustack::poll(&mut fds, Some(WAIT)).unwrap(), 1);
        assert_eq!(fds[0].revents, Events::IN);
        assert!(fds[1].revents.is_empty());
        l.set_nonblocking(true).unwrap();
        let (_s, peer) = l.accept().expect("readable means accept() does not block");
        assert_eq!(peer, client.join().unwrap().unwrap().local_addr().unwrap());
    });
}

#[test]
fn poll_on_sockets_without_a_connection() {
    let p = pair();
    // Linux: a fresh TCP socket is "writable" and hung up; a listener with nothing queued
    // is not ready at all.
    let fresh = tcp(&p.a, Domain::Inet);
    let mut fds = [PollFd::new(&fresh, Events::IN | Events::OUT)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(fds[0].revents, Events::OUT | Events::HUP);
    let (l, _) = listener(&p.a, A, 1);
    let mut fds = [PollFd::new(&l, Events::IN | Events::OUT)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
    // A connection: writable; after the peer's FIN also readable (EOF).
    let (c, s) = connection(&p, A, B);
    let mut fds = [PollFd::new(&c, Events::IN | Events::OUT)];
    assert_eq!(ustack::poll(&mut fds, Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(fds[0].revents, Events::OUT);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(wait_for(&c, Events::IN), Events::IN);
}

#[test]
fn errnos_become_io_errors_of_the_matching_kind() {
    let p = pair();
    // Through the std-like wrappers, as code written for std::net sees them.
    let refused = TcpStream::connect(&p.a, addr(B, 9)).unwrap_err();
    let io_err = refused;
    assert_eq!(io_err.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(Errno::from_io(&io_err), Some(Errno::ECONNREFUSED));
    // The kernel's errno itself, as std::net's errors carry it.
    assert_eq!(io_err.raw_os_error(), Some(Errno::ECONNREFUSED.code()));

    let lone = lone_a();
    let timed_out = TcpStream::connect_timeout(&lone.stack, &addr(B, 80), Duration::from_millis(100)).unwrap_err();
    assert_eq!(timed_out.kind(), ErrorKind::TimedOut);

    let listener = TcpListener::bind(&p.b, addr(B, 0)).unwrap();
    let at = listener.local_addr().unwrap();
    let in_use = TcpListener::bind(&p.b, at).unwrap_err();
    assert_eq!(in_use.kind(), ErrorKind::AddrInUse);
    let not_here = UdpSocket::bind(&p.b, addr(A, 0)).unwrap_err();
    assert_eq!(not_here.kind(), ErrorKind::AddrNotAvailable);

    let mut client = TcpStream::connect(&p.a, at).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    assert_eq!(server.read(&mut [0; 8]).unwrap_err().kind(), ErrorKind::WouldBlock);
    server.set_read_timeout(Some(WAIT)).unwrap();
    client.write_all(b"over std::io").unwrap();
    let mut buf = [0; 12];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"over std::io");

    client.shutdown(Shutdown::Write).unwrap();
    let broken = client.write(b"x").unwrap_err();
    assert_eq!(broken.kind(), ErrorKind::BrokenPipe);
    assert_eq!(Errno::from_io(&broken), Some(Errno::EPIPE));
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "read_to_end stops at the FIN");

    // A reset: the client closes with unread data.
    server.write_all(b"unread").unwrap();
    assert!(wait_for(client.socket(), Events::IN).contains(Events::IN));
    drop(client);
    // The server already sees EOF (readable); wait for the error itself.
    assert!(wait_for(server.socket(), Events::NONE).contains(Events::ERR));
    let reset = server.read(&mut [0; 8]).unwrap_err();
    assert_eq!(reset.kind(), ErrorKind::ConnectionReset);
    assert_eq!(server.write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);

    let unconnected = Socket::new(&p.a, Domain::Inet, Type::Stream).unwrap();
    let not_conn: io::Error = unconnected.recv(&mut [0; 8]).unwrap_err().into();
    assert_eq!(not_conn.kind(), ErrorKind::NotConnected);
}

/// What a socket call says for each kind of destination, as Linux says it in a namespace
/// holding a TUN at 10.7.0.1/24 and fd00:7::1/64 with its loopback down (measured on
/// Linux 6.18; src/engine/route.rs has the table): (TCP connect(), UDP sendto(), UDP
/// connect()), without a gateway and with one. A refused destination is never sent to.
#[test]
fn destinations_without_a_route_or_that_no_packet_may_go_to_are_refused_as_linux_refuses_them() {
    use Errno::{EACCES, EINPROGRESS, ENETUNREACH};
    type Answers = (Errno, Option<Errno>, Option<Errno>);
    let sent = |r: Result<usize, Errno>| r.err();
    let linux: [(&str, Answers, Answers); 8] = [
        // destination: (no gateway), (with a gateway)
        ("10.99.0.1", (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)), (EINPROGRESS, None, None)),
        (
            "127.0.0.1",
            (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)),
            (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)),
        ),
        ("10.0.0.255", (ENETUNREACH, Some(EACCES), Some(EACCES)), (ENETUNREACH, Some(EACCES), Some(EACCES))),
        (
            "255.255.255.255",
            (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)),
            (ENETUNREACH, Some(EACCES), Some(EACCES)),
        ),
        ("224.0.0.1", (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)), (ENETUNREACH, None, None)),
        ("2001:db8::1", (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)), (EINPROGRESS, None, None)),
        (
            "::1",
            (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)),
            (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)),
        ),
        ("ff02::1", (ENETUNREACH, Some(ENETUNREACH), Some(ENETUNREACH)), (ENETUNREACH, None, None)),
    ];
    for gateway in [false, true] {
        let mut config = ustack_testkit::pair::config(A, A6);
        if gateway {
            config.gateways = vec!["10.0.0.254".parse().unwrap(), "fd00::fe".parse().unwrap()];
        }
        let (end, wire) = ustack::device::Wire::pair(1500).unwrap();
        let stack = ustack::Stack::new(end, config).unwrap();
        for (dst, without, with) in linux {
            let to = addr(dst, 80);
            let tcp = sock(&stack, domain_of(dst), Type::Stream);
            tcp.set_nonblocking(true).unwrap();
            let udp = sock(&stack, domain_of(dst), Type::Dgram);
            let udp_connected = sock(&stack, domain_of(dst), Type::Dgram);
            let ours = (err(tcp.connect(to)), sent(udp.send_to(b"x", to)), udp_connected.connect(to).err());
            let expected = if gateway { with } else { without };
            assert_eq!(ours, expected, "{dst}, {}", if gateway { "with a gateway" } else { "no gateway" });
        }
        // Through the gateway, everything off the link goes into the one link, the
        // kernel's to route on; what was refused never went anywhere.
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.len() < if gateway { 6 } else { 0 } && std::time::Instant::now() < deadline {
            match wire.recv_raw() {
                Some(frame) => out.push(ustack::packet::decode(&frame)),
                None => thread::sleep(Duration::from_millis(5)),
            }
        }
        let dsts: std::collections::BTreeSet<String> =
            out.iter().filter_map(|s| s.ip()).map(|ip| ip.dst.to_string()).collect();
        let allowed: std::collections::BTreeSet<String> = if gateway {
            ["10.99.0.1", "224.0.0.1", "2001:db8::1", "ff02::1"].map(String::from).into()
        } else {
            Default::default()
        };
        assert!(dsts.is_subset(&allowed), "sent to {dsts:?}");
        drop(stack);
        while let Some(frame) = wire.recv_raw() {
            let s = ustack::packet::decode(&frame);
            let dst = s.ip().map(|ip| ip.dst.to_string()).unwrap_or_default();
            assert!(allowed.contains(&dst) || dst.is_empty(), "sent to {dst}");
        }
    }
}
