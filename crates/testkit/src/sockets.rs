//! Socket helpers for tests: every blocking call bounded by [`WAIT`], so a bug fails a
//! test instead of hanging it, and the few steps most tests share (a listener, an
//! established connection, reading exactly n bytes).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ustack::{Domain, Errno, Events, PollFd, Socket, Stack, Type};

use crate::pair::Pair;

/// The bound on every wait in the tests: a bug fails a test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(5);

/// `ip:port`, from an address written as text.
pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// socket(), with SO_RCVTIMEO and SO_SNDTIMEO of [`WAIT`] so no call blocks forever.
pub fn sock(stack: &Stack, domain: Domain, ty: Type) -> Socket {
    let s = Socket::new(stack, domain, ty).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// A TCP socket, as [`sock`].
pub fn tcp(stack: &Stack, domain: Domain) -> Socket {
    sock(stack, domain, Type::Stream)
}

/// A UDP socket, as [`sock`].
pub fn udp(stack: &Stack, domain: Domain) -> Socket {
    sock(stack, domain, Type::Dgram)
}

/// The domain an address belongs to.
pub fn domain_of(ip: &str) -> Domain {
    if ip.contains(':') { Domain::Inet6 } else { Domain::Inet }
}

/// The errno of a call that must fail.
#[track_caller]
pub fn err<T: std::fmt::Debug>(result: Result<T, Errno>) -> Errno {
    match result {
        Ok(v) => panic!("expected an errno, got Ok({v:?})"),
        Err(e) => e,
    }
}

/// A TCP listener on `ip` (an ephemeral port) of `stack`, and its address.
pub fn listener(stack: &Stack, ip: &str, backlog: u32) -> (Socket, SocketAddr) {
    let l = tcp(stack, domain_of(ip));
    l.bind(addr(ip, 0)).unwrap();
    l.listen(backlog).unwrap();
    let at = l.local_addr().unwrap();
    (l, at)
}

/// An established connection from a (at `a_ip`) to b (at `b_ip`): (client, server).
pub fn connection(p: &Pair, a_ip: &str, b_ip: &str) -> (Socket, Socket) {
    let (l, at) = listener(&p.b, b_ip, 1);
    let c = tcp(&p.a, domain_of(a_ip));
    c.connect_timeout(at, WAIT).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    (c, s)
}

/// Waits (up to [`WAIT`]) until `socket` reports one of `events` (or ERR/HUP); returns
/// what it reported.
#[track_caller]
pub fn wait_for(socket: &Socket, events: Events) -> Events {
    let mut fds = [PollFd::new(socket, events)];
    let n = ustack::poll(&mut fds, Some(WAIT)).unwrap();
    assert_eq!(n, 1, "socket not ready within {WAIT:?}");
    fds[0].revents
}

/// Reads exactly `n` bytes from a TCP socket.
#[track_caller]
pub fn recv_exact(socket: &Socket, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    let mut got = 0;
    while got < n {
        let k = socket.recv(&mut out[got..]).unwrap();
        assert!(k > 0, "EOF after {got} of {n} bytes");
        got += k;
    }
    out
}

/// For a condition no call can wait on (a counter in the stack): checks it every few
/// milliseconds, failing the test if it does not hold within [`WAIT`].
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Test data that does not repeat in any way TCP could get away with (an xorshift stream).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A kernel TCP client (run it inside the lab's namespace) that connects to `server`,
/// writes `data` from a second thread and shuts down its sending side, while it reads
/// the echo to its end: what came back. Every step is bounded by `patience`.
pub fn kernel_echo(server: SocketAddr, data: Vec<u8>, patience: Duration) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Write as _};
    let stream = std::net::TcpStream::connect_timeout(&server, patience)?;
    stream.set_read_timeout(Some(patience))?;
    let writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        (&writer).write_all(&data)?;
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut echoed = Vec::new();
    (&stream).read_to_end(&mut echoed)?;
    sender.join().map_err(|_| std::io::Error::other("the sending thread panicked"))??;
    Ok(echoed)
}
