//! Every wrong call returns the errno Linux returns — one test per row of the table in
//! docs/errno.md.

use std::net::Shutdown;
use ustack::{Domain, Errno, Socket, Type};
use ustack_testkit::*;

/// A pair of stacks, and on b a listener whose address is returned with it.
fn setup() -> (Pair, Socket, std::net::SocketAddr) {
    let p = pair();
    let (l, at) = listener(&p.b, B, 4);
    (p, l, at)
}

macro_rules! misuse {
    ($($name:ident: |$p:ident, $l:ident, $at:ident| $call:expr => $errno:ident;)*) => {
        $(
            #[test]
            fn $name() {
                #[allow(unused_variables)]
                let ($p, $l, $at) = setup();
                assert_eq!(err($call), Errno::$errno);
            }
        )*
    };
}

misuse! {
    accept_on_an_unbound_socket: |p, l, at| tcp(&p.a, Domain::Inet).accept() => EINVAL;
    accept_on_a_bound_socket_that_is_not_listening: |p, l, at| {
        let s = tcp(&p.a, Domain::Inet);
        s.bind(addr(A, 0)).unwrap();
        s.accept()
    } => EINVAL;
    accept_on_a_connected_socket: |p, l, at| {
        let c = tcp(&p.a, Domain::Inet);
        c.connect(at).unwrap();
        c.accept()
    } => EINVAL;
    accept_on_udp: |p, l, at| udp(&p.a, Domain::Inet).accept() => EOPNOTSUPP;
    send_on_a_listener: |p, l, at| l.send(b"x") => EPIPE;
    send_on_an_unconnected_tcp_socket: |p, l, at| tcp(&p.a, Domain::Inet).send(b"x") => EPIPE;
    send_on_unconnected_udp: |p, l, at| udp(&p.a, Domain::Inet).send(b"x") => EDESTADDRREQ;
    recv_on_an_unconnected_tcp_socket: |p, l, at| tcp(&p.a, Domain::Inet).recv(&mut [0; 4]) => ENOTCONN;
    recv_on_a_listener: |p, l, at| l.recv(&mut [0; 4]) => ENOTCONN;
    bind_twice: |p, l, at| {
        let s = tcp(&p.a, Domain::Inet);
        s.bind(addr(A, 0)).unwrap();
        s.bind(addr(A, 0))
    } => EINVAL;
    bind_after_connect: |p, l, at| {
        let c = tcp(&p.a, Domain::Inet);
        c.connect(at).unwrap();
        c.bind(addr(A, 0))
    } => EINVAL;
    bind_to_a_port_in_use: |p, l, at| tcp(&p.b, Domain::Inet).bind(at) => EADDRINUSE;
    bind_to_an_address_not_on_the_stack: |p, l, at| tcp(&p.a, Domain::Inet).bind(addr("10.0.0.99", 0)) => EADDRNOTAVAIL;
    bind_inet_to_an_ipv6_address: |p, l, at| tcp(&p.a, Domain::Inet).bind(addr(A6, 0)) => EAFNOSUPPORT;
    bind_inet6_to_an_ipv4_address: |p, l, at| tcp(&p.a, Domain::Inet6).bind(addr(A, 0)) => EINVAL;
    connect_twice: |p, l, at| {
        let c = tcp(&p.a, Domain::Inet);
        c.connect(at).unwrap();
        c.connect(at)
    } => EISCONN;
    connect_on_a_listener: |p, l, at| l.connect(addr(A, 80)) => EISCONN;
    connect_inet_to_an_ipv6_address: |p, l, at| tcp(&p.a, Domain::Inet).connect(addr(B6, 80)) => EAFNOSUPPORT;
    connect_to_a_closed_port: |p, l, at| tcp(&p.a, Domain::Inet).connect(addr(B, 9)) => ECONNREFUSED;
    listen_on_udp: |p, l, at| udp(&p.a, Domain::Inet).listen(4) => EOPNOTSUPP;
    listen_on_a_connected_socket: |p, l, at| {
        let c = tcp(&p.a, Domain::Inet);
        c.connect(at).unwrap();
        c.listen(4)
    } => EINVAL;
    sendto_inet_with_an_ipv6_address: |p, l, at| udp(&p.a, Domain::Inet).send_to(b"x", addr(B6, 9)) => EAFNOSUPPORT;
    sendto_a_datagram_larger_than_the_link: |p, l, at| udp(&p.a, Domain::Inet).send_to(&[0; 1500], addr(B, 9)) => EMSGSIZE;
    shutdown_an_unconnected_socket: |p, l, at| tcp(&p.a, Domain::Inet).shutdown(Shutdown::Both) => ENOTCONN;
    getpeername_of_an_unconnected_socket: |p, l, at| tcp(&p.a, Domain::Inet).peer_addr() => ENOTCONN;
    close_twice: |p, l, at| {
        let s = tcp(&p.a, Domain::Inet);
        s.close().unwrap();
        s.close()
    } => EBADF;
    use_after_close: |p, l, at| {
        let s = Socket::new(&p.a, Domain::Inet, Type::Stream).unwrap();
        s.close().unwrap();
        s.connect(at)
    } => EBADF;
    nonblocking_accept_with_nothing_pending: |p, l, at| {
        l.set_nonblocking(true).unwrap();
        l.accept()
    } => EAGAIN;
    nonblocking_connect: |p, l, at| {
        let c = tcp(&p.a, Domain::Inet);
        c.set_nonblocking(true).unwrap();
        c.connect(at)
    } => EINPROGRESS;
}

#[test]
fn nonblocking_connect_again_while_in_progress() {
    let lone = lone_a(); // nobody answers, so the connection stays in progress
    let c = tcp(&lone.stack, Domain::Inet);
    c.set_nonblocking(true).unwrap();
    assert_eq!(err(c.connect(addr(B, 80))), Errno::EINPROGRESS);
    assert_eq!(err(c.connect(addr(B, 80))), Errno::EALREADY);
}
