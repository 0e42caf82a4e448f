//! A stack of two shards (`Stack::sharded` on a two-queue TUN) against the Linux kernel,
//! inside a network namespace each test creates: accept() takes from either shard, UDP
//! and connect() work as on one shard, a listener's copies go when it closes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener as KernelListener, TcpStream as KernelStream, UdpSocket as KernelUdp};
use std::time::Duration;

use ustack::{TcpListener, TcpStream, UdpSocket};
use ustack_testkit::addr;
use ustack_testkit::lab::{KERNEL, Lab, USTACK, lab_sharded};

const PATIENCE: Duration = Duration::from_secs(10);

/// The shards of the table's rows that `keep` keeps.
fn shards_of(stack: &ustack::Stack, keep: impl Fn(&ustack::engine::DemuxRow) -> bool) -> Vec<usize> {
    stack.demux_table().rows.iter().filter(|r| keep(r)).map(|r| r.shard).collect()
}

/// `n` kernel clients connected to ustack's port 7, each taken by `accept`; asserts that
/// the connections landed on both shards.
fn connect_on_both_shards<T>(lab: &Lab, n: usize, accept: impl Fn() -> T) -> (Vec<io::Result<KernelStream>>, Vec<T>) {
    let clients = lab
        .ns
        .run(|| (0..n).map(|_| KernelStream::connect_timeout(&addr(USTACK, 7), PATIENCE)).collect::<Vec<_>>())
        .unwrap();
    let accepted: Vec<T> = (0..n).map(|_| accept()).collect();
    let shards = shards_of(&lab.stack, |r| r.state == "ESTABLISHED");
    assert_eq!(shards.len(), n);
    assert!(shards.contains(&0) && shards.contains(&1), "connections on both shards: {shards:?}");
    (clients, accepted)
}

/// One accept() loop takes the connections of both shards, and each answers on its own.
#[test]
fn accept_takes_connections_from_every_shard() {
    ustack::require_tun!();
    const CLIENTS: usize = 40;
    let lab = lab_sharded(2);
    assert_eq!(lab.stack.shards(), 2);
    let listener = TcpListener::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    assert_eq!(shards_of(&lab.stack, |r| r.queues.is_some()), [0, 1], "a listener on each shard");

    let (clients, mut accepted) = connect_on_both_shards(&lab, CLIENTS, || listener.accept().unwrap().0);

    // Each connection carries data from the shard it is on. (accept()'s order is not
    // connect()'s: every server writes before any client reads.)
    for server in &mut accepted {
        server.write_all(b"hello\n").unwrap();
    }
    for client in clients {
        let mut client = client.unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut line = [0; 6];
        client.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"hello\n");
    }
    listener.set_nonblocking(true).unwrap();
    assert_eq!(listener.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock, "nothing left on any shard");
}

/// A blocking accept() waits for a connection that comes to either shard.
#[test]
fn a_blocked_accept_wakes_for_either_shard() {
    ustack::require_tun!();
    let lab = lab_sharded(2);
    let listener = TcpListener::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    let ns = lab.ns.clone();
    let clients = std::thread::spawn(move || {
        ns.run(|| {
            (0..8)
                .map(|_| {
                    let stream = KernelStream::connect_timeout(&addr(USTACK, 7), PATIENCE).unwrap();
                    // One at a time, each after accept() is already waiting.
                    std::thread::sleep(Duration::from_millis(20));
                    stream
                })
                .collect::<Vec<_>>()
        })
        .unwrap()
    });
    listener.set_nonblocking(false).unwrap();
    listener.socket().set_read_timeout(Some(PATIENCE)).unwrap();
    for _ in 0..8 {
        listener.accept().expect("accept() woken by a connection on either shard");
    }
    drop(clients.join().unwrap());
}

/// Closing a listener closes its copies: the port is free on every shard again.
#[test]
fn a_closed_listener_leaves_no_copy_behind() {
    ustack::require_tun!();
    let lab = lab_sharded(2);
    let listener = TcpListener::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    let copy = listener.try_clone().unwrap();
    drop(listener);
    assert_eq!(shards_of(&lab.stack, |r| r.queues.is_some()).len(), 2, "a handle is still open");
    drop(copy);
    assert!(shards_of(&lab.stack, |r| r.queues.is_some()).is_empty());
    let again = TcpListener::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    assert_eq!(shards_of(&lab.stack, |r| r.queues.is_some()), [0, 1]);
    drop(again);
}

/// UDP on a sharded stack: a ustack echo socket answers kernel clients on many ports, and
/// a ustack client gets its kernel server's answers.
#[test]
fn udp_works_on_a_sharded_stack() {
    ustack::require_tun!();
    let lab = lab_sharded(2);
    let echo = UdpSocket::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    echo.set_read_timeout(Some(PATIENCE)).unwrap();
    let echoer = std::thread::spawn(move || {
        let mut buf = [0; 2048];
        for _ in 0..16 {
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
        }
    });
    lab.ns
        .run(|| -> io::Result<()> {
            for i in 0..16u8 {
                let socket = KernelUdp::bind(addr(KERNEL, 0))?;
                socket.set_read_timeout(Some(PATIENCE))?;
                socket.send_to(&[i; 10], addr(USTACK, 7))?;
                let mut buf = [0; 64];
                let (n, from) = socket.recv_from(&mut buf)?;
                assert_eq!((&buf[..n], from), (&[i; 10][..], addr(USTACK, 7)));
            }
            Ok(())
        })
        .unwrap()
        .unwrap();
    echoer.join().unwrap();

    let server = lab.ns.run(|| KernelUdp::bind(addr(KERNEL, 5353))).unwrap().unwrap();
    let kernel = std::thread::spawn(move || {
        server.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0; 64];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(&buf[..n], from).unwrap();
    });
    let client = UdpSocket::bind(&lab.stack, addr("0.0.0.0", 0)).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.send_to(b"ping", addr(KERNEL, 5353)).unwrap();
    let mut buf = [0; 64];
    assert_eq!(client.recv_from(&mut buf).unwrap(), (4, addr(KERNEL, 5353)));
    kernel.join().unwrap();
}

/// connect() from a sharded stack: its connections, opened on shard 0, get their
/// answers there whichever queue the kernel chose, and carry data both ways.
#[test]
fn connect_works_from_a_sharded_stack() {
    ustack::require_tun!();
    const CONNECTIONS: usize = 20;
    let lab = lab_sharded(2);
    let server = lab.ns.run(|| KernelListener::bind(addr(KERNEL, 8000))).unwrap().unwrap();
    let kernel = std::thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            let (mut stream, _) = server.accept().unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut buf = [0; 1024];
            let n = stream.read(&mut buf).unwrap();
            stream.write_all(&buf[..n]).unwrap();
        }
    });
    let mut streams = Vec::new();
    for i in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(&lab.stack, addr(KERNEL, 8000)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let hello = format!("hello {i}");
        stream.write_all(hello.as_bytes()).unwrap();
        let mut back = vec![0; hello.len()];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, hello.as_bytes());
        streams.push(stream);
    }
    kernel.join().unwrap();
    let remote: SocketAddr = addr(KERNEL, 8000);
    assert_eq!(shards_of(&lab.stack, |r| r.remote == Some(remote)), vec![0; CONNECTIONS]);
}

/// poll() takes the sockets of every shard of one stack: a listener is readable when a
/// connection waits on any shard, and accepted connections from both shards poll together.
#[test]
fn poll_watches_sockets_on_every_shard() {
    use ustack::{Events, PollFd, poll};
    ustack::require_tun!();
    const CLIENTS: usize = 16;
    let lab = lab_sharded(2);
    let listener = TcpListener::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    let mut clients = lab
        .ns
        .run(|| {
            (0..CLIENTS).map(|_| KernelStream::connect_timeout(&addr(USTACK, 7), PATIENCE).unwrap()).collect::<Vec<_>>()
        })
        .unwrap();
    let mut accepted = Vec::new();
    while accepted.len() < CLIENTS {
        let mut fds = [PollFd::new(listener.socket(), Events::IN)];
        assert_eq!(poll(&mut fds, Some(PATIENCE)).unwrap(), 1, "the listener is readable");
        accepted.push(listener.accept().unwrap().0);
    }
    let shards = shards_of(&lab.stack, |r| r.state == "ESTABLISHED");
    assert!(shards.contains(&0) && shards.contains(&1), "{shards:?}");
    for client in &mut clients {
        client.write_all(b"x").unwrap();
    }
    let mut fds: Vec<PollFd<'_>> = accepted.iter().map(|s| PollFd::new(s.socket(), Events::IN)).collect();
    let deadline = std::time::Instant::now() + PATIENCE;
    while fds.iter().any(|fd| fd.revents.is_empty()) {
        assert!(std::time::Instant::now() < deadline, "every connection readable");
        poll(&mut fds, Some(PATIENCE)).unwrap();
    }
}

/// Options set on a listener after listen() reach the connections every shard accepts,
/// as a listener's options reach Linux's accepted sockets whenever they were set.
#[test]
fn options_set_on_a_listener_after_listen_reach_connections_on_every_shard() {
    use ustack::{Domain, Socket, Type};
    ustack::require_tun!();
    const CLIENTS: usize = 40;
    let lab = lab_sharded(2);
    let listener = Socket::new(&lab.stack, Domain::Inet, Type::Stream).unwrap();
    listener.bind(addr("0.0.0.0", 7)).unwrap();
    listener.listen(64).unwrap();
    listener.set_nodelay(true).unwrap();
    listener.set_keepalive(Some(Duration::from_secs(30))).unwrap();
    listener.set_linger(Some(Duration::ZERO)).unwrap();
    listener.set_recv_buffer_size(32 * 1024).unwrap();
    listener.set_send_buffer_size(32 * 1024).unwrap();
    listener.set_ttl(9).unwrap();
    let (clients, accepted) = connect_on_both_shards(&lab, CLIENTS, || listener.accept().unwrap().0);
    for s in &accepted {
        assert!(s.nodelay().unwrap(), "TCP_NODELAY");
        assert_eq!(s.keepalive().unwrap(), Some(Duration::from_secs(30)), "SO_KEEPALIVE");
        assert_eq!(s.linger().unwrap(), Some(Duration::ZERO), "SO_LINGER");
        assert_eq!(s.recv_buffer_size().unwrap(), 2 * 32 * 1024, "SO_RCVBUF");
        assert_eq!(s.send_buffer_size().unwrap(), 2 * 32 * 1024, "SO_SNDBUF");
        assert_eq!(s.ttl().unwrap(), 9, "IP_TTL");
    }
    drop(clients);
}

/// A UDP socket bound on a stack of two shards has a copy on each: the kernel's flows
/// spread over both (with nobody reading, both copies fill and drop, the demux table
/// shows), and once the socket answers a flow from the shard that flow belongs to, the
/// kernel keeps the flow on that shard's queue: no datagram needs forwarding.
#[test]
fn udp_flows_spread_over_the_shards_and_are_answered_from_their_own() {
    ustack::require_tun!();
    const CLIENTS: usize = 32;
    let lab = lab_sharded(2);
    let echo = UdpSocket::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    let udp_rows = |stack: &ustack::Stack| {
        stack.demux_table().rows.into_iter().filter(|r| r.proto == "udp" && r.local.port() == 7).collect::<Vec<_>>()
    };
    assert_eq!(udp_rows(&lab.stack).iter().map(|r| r.shard).collect::<Vec<_>>(), [0, 1], "a copy on each shard");
    let clients: Vec<KernelUdp> =
        lab.ns.run(|| (0..CLIENTS).map(|_| KernelUdp::bind(addr(KERNEL, 0)).unwrap()).collect()).unwrap();
    for c in &clients {
        c.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    echo.set_read_timeout(Some(PATIENCE)).unwrap();
    // Three rounds of one request per client, each answered.
    let mut forwarded_after_first_round = 0;
    for round in 0..3u8 {
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[round, i as u8], addr(USTACK, 7)).unwrap();
        }
        for _ in 0..CLIENTS {
            let mut buf = [0; 16];
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
        }
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0; 16];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&[round, i as u8][..], addr(USTACK, 7)));
        }
        if round == 0 {
            forwarded_after_first_round = lab.stack.forwarded().iter().map(|(f, _)| f).sum::<u64>();
        }
    }
    let forwarded = lab.stack.forwarded().iter().map(|(f, _)| f).sum::<u64>();
    assert_eq!(forwarded, forwarded_after_first_round, "rounds 2 and 3 came on their shards' queues");

    // Nobody reads: each copy's buffer fills, and both drop.
    for _ in 0..200 {
        for c in &clients {
            c.send_to(&[0; 1400], addr(USTACK, 7)).unwrap();
        }
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while udp_rows(&lab.stack).iter().any(|r| r.dropped == 0) {
        assert!(std::time::Instant::now() < deadline, "both copies dropped: {:?}", udp_rows(&lab.stack));
        std::thread::sleep(Duration::from_millis(10));
    }

    // The copies close with the socket, and the port can be bound again.
    drop(echo);
    assert!(udp_rows(&lab.stack).is_empty(), "the copies closed with the socket");
    let again = UdpSocket::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    // What the flood left in the TUN's queues reaches it first: read until 200 ms pass
    // without a datagram, so that its buffers have room for what follows.
    let mut buf = [0; 2048];
    again.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while again.recv_from(&mut buf).is_ok() {}
    again.set_read_timeout(Some(PATIENCE)).unwrap();
    for c in &clients {
        c.send_to(b"again", addr(USTACK, 7)).unwrap();
    }
    let mut senders = std::collections::HashSet::new();
    while senders.len() < CLIENTS {
        let (n, from) = again.recv_from(&mut buf).expect("every flow reaches the new socket");
        assert_eq!(n, 5);
        senders.insert(from);
    }
}

/// A connected UDP socket on a stack of two shards sends and receives whichever shard
/// its peer's flow belongs to; MSG_DONTWAIT and poll() look at every shard.
#[test]
fn a_connected_udp_socket_on_two_shards_talks_to_its_peer() {
    use ustack::{Events, MsgFlags, PollFd, poll};
    ustack::require_tun!();
    let lab = lab_sharded(2);
    for port in 7100..7108u16 {
        let socket = UdpSocket::bind(&lab.stack, addr("0.0.0.0", port)).unwrap();
        let peer = lab.ns.run(|| KernelUdp::bind(addr(KERNEL, 0))).unwrap().unwrap();
        peer.set_read_timeout(Some(PATIENCE)).unwrap();
        socket.connect(peer.local_addr().unwrap()).unwrap();
        socket.send(b"hello").unwrap();
        let mut buf = [0; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], addr(USTACK, port)));
        let raw = socket.socket();
        assert_eq!(raw.recv_flags(&mut buf, MsgFlags::DONTWAIT), Err(ustack::Errno::EAGAIN));
        peer.send_to(b"back", addr(USTACK, port)).unwrap();
        let mut fds = [PollFd::new(raw, Events::IN)];
        assert_eq!(poll(&mut fds, Some(PATIENCE)).unwrap(), 1, "readable, whichever shard has it");
        assert_eq!(socket.recv(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"back");
    }
}
