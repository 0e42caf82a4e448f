//! send/recv flags (MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL, MSG_TRUNC), sendmsg/recvmsg with
//! scatter/gather buffers, and SO_LINGER's waiting close, through the blocking socket API
//! between two stacks on the in-memory wire. Linux is the oracle.

use ustack_testkit::*;

use std::io::{IoSlice, IoSliceMut};
use std::thread;

use ustack::{Domain, Errno, Events, MsgFlags, Socket};

#[test]
fn dontwait_makes_one_call_on_a_blocking_socket_say_eagain() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    s.set_read_timeout(None).unwrap();
    assert_eq!(s.recv_flags(&mut [0; 8], MsgFlags::DONTWAIT), Err(Errno::EAGAIN));
    let u = udp(&p.b, Domain::Inet);
    u.bind(addr(B, 0)).unwrap();
    assert_eq!(u.recv_from_flags(&mut [0; 8], MsgFlags::DONTWAIT), Err(Errno::EAGAIN));
    // The socket itself still blocks: the next plain recv waits for the data.
    c.send(b"late").unwrap();
    assert_eq!(s.recv(&mut [0; 8]), Ok(4));
}

#[test]
fn waitall_returns_the_full_length_from_pieces() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    let data = pattern(3000, 7);
    let sender = {
        let data = data.clone();
        thread::spawn(move || {
            for piece in data.chunks(500) {
                c.send(piece).unwrap();
                // Apart, so that a recv without MSG_WAITALL would return after a piece.
                thread::sleep(std::time::Duration::from_millis(5));
            }
            c
        })
    };
    let mut buf = vec![0; 3000];
    assert_eq!(s.recv_flags(&mut buf, MsgFlags::WAITALL), Ok(3000));
    assert_eq!(buf, data);
    let c = sender.join().unwrap();

    // At end of stream MSG_WAITALL returns what there was.
    c.send(b"tail").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = [0; 100];
    assert_eq!(s.recv_flags(&mut buf, MsgFlags::WAITALL), Ok(4));
    assert_eq!(s.recv_flags(&mut buf, MsgFlags::WAITALL), Ok(0));
}

#[test]
fn peek_returns_the_data_the_next_recv_gets() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    c.send(b"peekaboo").unwrap();
    wait_for(&s, Events::IN);
    let mut buf = [0; 4];
    assert_eq!(s.recv_flags(&mut buf, MsgFlags::PEEK), Ok(4));
    assert_eq!(&buf, b"peek");
    let mut all = recv_exact(&s, 8);
    assert_eq!(all, b"peekaboo");
    all.clear();
    assert_eq!(s.recv_flags(&mut buf, MsgFlags::PEEK | MsgFlags::DONTWAIT), Err(Errno::EAGAIN));
}

#[test]
fn trunc_on_udp_says_how_long_the_datagram_was() {
    let p = pair();
    let (a, b) = (udp(&p.a, Domain::Inet), udp(&p.b, Domain::Inet));
    b.bind(addr(B, 0)).unwrap();
    let to = b.local_addr().unwrap();
    for _ in 0..3 {
        a.send_to(b"0123456789", to).unwrap();
    }
    let mut small = [0; 4];
    // recvfrom with MSG_TRUNC: the real length, the buffer holding what fitted.
    let sender = addr(A, a.local_addr().unwrap().port());
    let (n, from) = b.recv_from_flags(&mut small, MsgFlags::TRUNC).unwrap();
    assert_eq!((n, &small, from), (10, b"0123", sender));
    // recvmsg: scattered over the buffers, and MSG_TRUNC out because it did not fit.
    let (mut x, mut y) = ([0; 3], [0; 3]);
    let mut bufs = [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)];
    let (n, from, flags) = b.recv_msg(&mut bufs, MsgFlags::NONE).unwrap();
    assert_eq!((n, from, flags), (6, Some(sender), MsgFlags::TRUNC));
    assert_eq!((&x, &y), (b"012", b"345"));
    let mut whole = [0; 16];
    let (n, _, flags) = b.recv_msg(&mut [IoSliceMut::new(&mut whole)], MsgFlags::NONE).unwrap();
    assert_eq!((n, flags), (10, MsgFlags::NONE), "a datagram that fits is not truncated");
}

#[test]
fn sendmsg_gathers_and_recvmsg_scatters_a_stream() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    let bufs = [IoSlice::new(b"one "), IoSlice::new(b"two "), IoSlice::new(b"three")];
    assert_eq!(c.send_msg(&bufs, None, MsgFlags::NOSIGNAL), Ok(13));
    let (mut x, mut y) = ([0; 4], [0; 9]);
    let mut got = 0;
    while got < 13 {
        let mut bufs = [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)];
        let skip = advance(&mut bufs, got);
        let (n, from, flags) = s.recv_msg(skip, MsgFlags::NONE).unwrap();
        assert_eq!((from, flags), (None, MsgFlags::NONE), "TCP: no address, as Linux");
        got += n;
    }
    assert_eq!((&x, &y), (b"one ", b"two three"));
    // One buffer, read_vectored's usual call, is filled in place.
    assert_eq!(c.send_msg(&[IoSlice::new(b"four")], None, MsgFlags::NOSIGNAL), Ok(4));
    let mut one = [0; 8];
    let (n, from, flags) = s.recv_msg(&mut [IoSliceMut::new(&mut one)], MsgFlags::NONE).unwrap();
    assert_eq!((n, &one[..n], from, flags), (4, &b"four"[..], None, MsgFlags::NONE));

    // A datagram from several buffers is one datagram.
    let (a, b) = (udp(&p.a, Domain::Inet), udp(&p.b, Domain::Inet));
    b.bind(addr(B, 0)).unwrap();
    let to = b.local_addr().unwrap();
    assert_eq!(a.send_msg(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")], Some(to), MsgFlags::NONE), Ok(4));
    let mut buf = [0; 8];
    assert_eq!(b.recv(&mut buf), Ok(4));
    assert_eq!(&buf[..4], b"abcd");
}

/// `bufs` with the first `n` bytes skipped.
fn advance<'a, 'b>(bufs: &'b mut [IoSliceMut<'a>], mut n: usize) -> &'b mut [IoSliceMut<'a>] {
    let mut first = 0;
    while first < bufs.len() && n >= bufs[first].len() {
        n -= bufs[first].len();
        first += 1;
    }
    let bufs = &mut bufs[first..];
    if let Some(head) = bufs.first_mut() {
        head.advance(n);
    }
    bufs
}

#[test]
fn unknown_flags_are_eopnotsupp() {
    assert_eq!(MsgFlags::from_bits(libc::MSG_OOB), None);
    assert_eq!(MsgFlags::from_bits(0x40 | 0x2).map(MsgFlags::bits), Some(libc::MSG_DONTWAIT | libc::MSG_PEEK));
}

#[test]
fn a_lingering_close_returns_once_the_peer_has_everything() {
    let p = pair();
    let (c, s) = connection(&p, A, B);
    let data = pattern(40_000, 3);
    c.set_linger(Some(WAIT)).unwrap();
    assert_eq!(c.linger(), Ok(Some(WAIT)));
    assert_eq!(c.send(&data), Ok(data.len()));
    c.close().unwrap();
    // close() waited for the peer to acknowledge the data and the FIN: all of it is in
    // the server's buffer already, so a non-blocking read never has to wait.
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 8192];
    loop {
        match s.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("after a lingering close the data and FIN are there: {e} after {} bytes", got.len()),
        }
    }
    assert_eq!(got, data);
    drop::<Socket>(s);
}
