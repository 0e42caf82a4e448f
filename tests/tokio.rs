//! ustack's tokio sockets (`ustack::tokio`): the two examples against kernel clients in a
//! namespace (echo for a std::net client, axum for curl), and over the in-memory wire what
//! tokio users count on: cancel-safe accept() and recv_from(), a stream's halves in two
//! tasks at once, and sockets that sleep while idle (woken by the stack, not spinning).

#![cfg(feature = "tokio")]
// Each example includes the module they share (examples/common/) for itself.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/tokio_echo.rs"]
#[allow(dead_code)]
mod tokio_echo;

#[path = "../examples/http.rs"]
#[allow(dead_code)]
mod http;

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream as KernelStream, UdpSocket as KernelUdp};
use std::pin::{Pin, pin};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ustack::tokio::{TcpListener, TcpStream, UdpSocket};
use ustack_testkit::lab::{KERNEL, USTACK, lab, lab_sharded};
use ustack_testkit::{A, B, addr, output_within, pair, pattern};

/// How long a kernel client waits for an answer before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

/// A waker that counts its wakes and reports each on a channel, for polling a future by
/// hand and waiting for the stack to wake it.
struct Probe {
    wakes: AtomicUsize,
    woken: Mutex<mpsc::Sender<()>>,
}

impl Probe {
    fn new() -> (Arc<Probe>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (Arc::new(Probe { wakes: AtomicUsize::new(0), woken: Mutex::new(tx) }), rx)
    }

    fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl Wake for Probe {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let _ = self.woken.lock().unwrap().send(());
    }
}

/// Polls `future` once with `probe` as its waker.
fn poll_with<F: Future>(future: Pin<&mut F>, probe: &Arc<Probe>) -> Poll<F::Output> {
    let waker = Waker::from(probe.clone());
    future.poll(&mut Context::from_waker(&waker))
}

#[test]
fn echo_example_echoes_for_a_kernel_client() {
    ustack::require_tun!();
    let lab = lab();
    let rt = runtime();
    rt.spawn(tokio_echo::serve_tcp(TcpListener::bind(&lab.stack, tokio_echo::common::wildcard(7)).unwrap()));
    rt.spawn(tokio_echo::serve_udp(UdpSocket::bind(&lab.stack, tokio_echo::common::wildcard(7)).unwrap()));
    // More than the stack's 64 KiB buffers each way, so that both directions fill and the
    // echo's read and write halves take turns waiting.
    let sent = pattern(300_000, 7);
    let (echoed, datagram) = lab
        .ns
        .run(|| {
            let mut stream = KernelStream::connect_timeout(&addr(USTACK, 7), PATIENCE).unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let data = sent.clone();
            let writing = std::thread::spawn(move || {
                writer.write_all(&data).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut echoed = Vec::new();
            stream.read_to_end(&mut echoed).unwrap();
            writing.join().unwrap();

            let udp = KernelUdp::bind(addr(KERNEL, 0)).unwrap();
            udp.set_read_timeout(Some(PATIENCE)).unwrap();
            udp.send_to(b"datagram", addr(USTACK, 7)).unwrap();
            let mut buf = [0; 64];
            let (n, from) = udp.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr(USTACK, 7));
            (echoed, buf[..n].to_vec())
        })
        .unwrap();
    assert!(echoed == sent, "the echo differs from what was sent ({} bytes back of {})", echoed.len(), sent.len());
    assert_eq!(datagram, b"datagram");
}

#[test]
fn axum_example_answers_curl_with_its_connection() {
    ustack::require_tun!();
    if Command::new("curl").arg("--version").output().is_err() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true but curl is not installed");
        eprintln!("skipping: curl is not installed");
        return;
    }
    let lab = lab();
    let rt = runtime();
    rt.spawn(http::serve(TcpListener::bind(&lab.stack, http::common::wildcard(8080)).unwrap()));
    let out = lab
        .ns
        .run(|| {
            output_within(
                Command::new("curl").args(["-sS", "-i", "--max-time", "10", &format!("http://{USTACK}:8080/")]),
                PATIENCE * 2,
                "curl",
            )
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("axum on ustack"), "{text}");
    // The connection as ustack saw it: curl's end is the kernel's address, and the
    // handshake ended in ESTABLISHED.
    assert!(text.contains(&format!("connection: tcp {USTACK}:8080 <-> {KERNEL}:")), "{text}");
    assert!(text.contains("ESTABLISHED") && text.contains("handshake rtt:"), "{text}");
}

#[test]
fn a_dropped_accept_future_loses_no_connection() {
    let p = pair();
    let listener = TcpListener::bind(&p.b, addr(B, 0)).unwrap();
    let at = listener.local_addr().unwrap();
    let (probe, woken) = Probe::new();
    let client = {
        let mut accept = pin!(listener.accept());
        assert!(poll_with(accept.as_mut(), &probe).is_pending(), "nobody has connected yet");
        // A client connects; the stack wakes the pending accept, which is dropped unpolled
        // (as a select! that took another branch drops it).
        let client = ustack::TcpStream::connect(&p.a, at).unwrap();
        woken.recv_timeout(PATIENCE).expect("the connection wakes the accept");
        client
    };
    let rt = runtime();
    let (stream, peer) = rt.block_on(listener.accept()).expect("the connection is still there");
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(stream.peer_addr().unwrap(), peer);
}

#[test]
fn a_dropped_recv_from_future_loses_no_datagram() {
    let p = pair();
    let socket = UdpSocket::bind(&p.b, addr(B, 0)).unwrap();
    let at = socket.local_addr().unwrap();
    let sender = ustack::UdpSocket::bind(&p.a, addr(A, 0)).unwrap();
    let (probe, woken) = Probe::new();
    {
        let mut buf = [0; 64];
        let mut recv = pin!(socket.recv_from(&mut buf));
        assert!(poll_with(recv.as_mut(), &probe).is_pending(), "nothing was sent yet");
        sender.send_to(b"kept", at).unwrap();
        woken.recv_timeout(PATIENCE).expect("the datagram wakes the recv_from");
    }
    let rt = runtime();
    let mut buf = [0; 64];
    let (n, from) = rt.block_on(socket.recv_from(&mut buf)).unwrap();
    assert_eq!(&buf[..n], b"kept");
    assert_eq!(from, sender.local_addr().unwrap());
}

#[test]
fn a_streams_halves_read_and_write_from_two_tasks_at_once() {
    let p = pair();
    let rt = runtime();
    let listener = TcpListener::bind(&p.b, addr(B, 0)).unwrap();
    let at = listener.local_addr().unwrap();
    rt.spawn(tokio_echo::serve_tcp(listener));
    // 1 MB through 64 KiB buffers: the writer blocks until the reader, in another task,
    // drains what the echo sends back. With halves that could not work at once this hangs.
    let sent = pattern(1_000_000, 3);
    let echoed = rt.block_on(async {
        let stream = TcpStream::connect(&p.a, at).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let data = sent.clone();
        let writing = tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
            writer
        });
        let reading = tokio::spawn(async move {
            let mut echoed = Vec::new();
            reader.read_to_end(&mut echoed).await.unwrap();
            (reader, echoed)
        });
        let within = Duration::from_secs(60);
        let writer = tokio::time::timeout(within, writing).await.expect("the writer finishes").unwrap();
        let (reader, echoed) = tokio::time::timeout(within, reading).await.expect("the reader finishes").unwrap();
        let stream = reader.reunite(writer).expect("halves of one stream");
        assert_eq!(stream.local_addr().unwrap().ip(), addr(A, 0).ip());
        echoed
    });
    assert!(echoed == sent, "the echo differs ({} bytes of {})", echoed.len(), sent.len());
}

#[test]
fn connect_reports_a_refused_connection() {
    let p = pair();
    let rt = runtime();
    // Nobody listens on port 9 of stack b: its RST refuses the connection.
    let refused = rt.block_on(TcpStream::connect(&p.a, addr(B, 9))).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_connected_udp_socket_sends_and_receives_with_its_peer_only() {
    let p = pair();
    let rt = runtime();
    rt.block_on(async {
        let a = UdpSocket::bind(&p.a, addr(A, 0)).unwrap();
        let b = UdpSocket::bind(&p.b, addr(B, 0)).unwrap();
        let stranger = UdpSocket::bind(&p.a, addr(A, 0)).unwrap();
        let (a_at, b_at) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        b.connect(a_at).unwrap();
        assert_eq!(b.peer_addr().unwrap(), a_at);
        // The stranger's datagram is dropped; the peer's is received.
        stranger.send_to(b"not for b", b_at).await.unwrap();
        a.send_to(b"for b", b_at).await.unwrap();
        let mut buf = [0; 16];
        let n = b.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"for b");
        b.send(b"back").await.unwrap();
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], b_at));
    });
}

#[test]
fn a_pending_call_fails_with_enetdown_when_its_stack_stops() {
    let p = pair();
    let socket = UdpSocket::bind(&p.b, addr(B, 0)).unwrap();
    let (probe, woken) = Probe::new();
    let mut buf = [0; 8];
    let mut recv = pin!(socket.recv_from(&mut buf));
    assert!(poll_with(recv.as_mut(), &probe).is_pending());
    drop(p);
    woken.recv_timeout(PATIENCE).expect("the stack's end wakes the task");
    match poll_with(recv.as_mut(), &probe) {
        Poll::Ready(Err(e)) => {
            assert_eq!(ustack::Errno::from_io(&e), Some(ustack::Errno::ENETDOWN))
        }
        other => panic!("expected ENETDOWN, got {other:?}"),
    }
}

/// Counts how often the future inside is polled.
struct Counted<F> {
    polls: Arc<AtomicUsize>,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.future.as_mut().poll(cx)
    }
}

#[test]
fn idle_sockets_sleep_while_the_stack_is_busy_with_others() {
    let p = pair();
    let rt = runtime();
    // On stack b: a listener nobody connects to, a connection nobody sends on, and a UDP
    // socket nobody sends to; one task waits on all three.
    let listener = TcpListener::bind(&p.b, addr(B, 0)).unwrap();
    let idle_udp = Arc::new(UdpSocket::bind(&p.b, addr(B, 0)).unwrap());
    let echo = TcpListener::bind(&p.b, addr(B, 0)).unwrap();
    let echo_at = echo.local_addr().unwrap();
    let (client, mut idle_stream) = rt.block_on(async {
        let connect = TcpStream::connect(&p.a, listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(connect, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    });
    let polls = Arc::new(AtomicUsize::new(0));
    let udp = idle_udp.clone();
    let waiting = rt.spawn(Counted {
        polls: polls.clone(),
        future: Box::pin(async move {
            let mut stream_buf = [0; 64];
            let mut udp_buf = [0; 64];
            tokio::select! {
                accepted = listener.accept() => format!("accepted {:?}", accepted.map(|a| a.1)),
                read = idle_stream.read(&mut stream_buf) => format!("read {read:?}"),
                received = udp.recv_from(&mut udp_buf) => format!("{:?}", received.map(|(n, _)| udp_buf[..n].to_vec())),
            }
        }),
    });
    // Meanwhile stack b is busy with other sockets: 1 MB echoed over another connection
    // and 200 datagram round trips, thousands of rounds of its thread.
    rt.spawn(tokio_echo::serve_tcp(echo));
    let busy_udp = UdpSocket::bind(&p.b, addr(B, 0)).unwrap();
    let busy_at = busy_udp.local_addr().unwrap();
    rt.spawn(tokio_echo::serve_udp(busy_udp));
    rt.block_on(async {
        let mut stream = TcpStream::connect(&p.a, echo_at).await.unwrap();
        let data = pattern(1_000_000, 5);
        let (mut reader, mut writer) = stream.split();
        let write = async {
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
        };
        let mut echoed = Vec::new();
        let ((), read) = tokio::join!(write, reader.read_to_end(&mut echoed));
        read.unwrap();
        assert_eq!(echoed.len(), data.len());
        let socket = UdpSocket::bind(&p.a, addr(A, 0)).unwrap();
        for i in 0..200u32 {
            socket.send_to(&i.to_be_bytes(), busy_at).await.unwrap();
            let mut buf = [0; 8];
            let (n, _) = socket.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], i.to_be_bytes());
        }
    });
    // The waiting task was polled once, when it started: none of the stack's rounds for
    // other sockets woke it, and its own polls did not wake it either (a self-wake loop
    // would poll it thousands of times).
    assert_eq!(polls.load(Ordering::SeqCst), 1, "the idle task was polled again");
    assert!(!waiting.is_finished());
    // What it waits for does wake it.
    let sender = ustack::UdpSocket::bind(&p.a, addr(A, 0)).unwrap();
    sender.send_to(b"wake", idle_udp.local_addr().unwrap()).unwrap();
    let outcome = rt.block_on(async { tokio::time::timeout(PATIENCE, waiting).await }).expect("woken").unwrap();
    assert_eq!(outcome, format!("{:?}", Ok::<_, ()>(b"wake".to_vec())));
    drop(client);
}

#[test]
fn a_pending_read_is_not_woken_by_its_own_polls() {
    // A task polled again and again while nothing arrives (a select! whose other branches
    // fire) must not be woken by what its own calls do to the socket.
    let p = pair();
    let rt = runtime();
    let listener = TcpListener::bind(&p.b, addr(B, 0)).unwrap();
    let at = listener.local_addr().unwrap();
    let (client, mut server) = rt.block_on(async {
        let (client, accepted) = tokio::join!(TcpStream::connect(&p.a, at), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    });
    let (probe, woken) = Probe::new();
    let mut buf = [0; 16];
    let mut read = pin!(server.read(&mut buf));
    for _ in 0..100 {
        assert!(poll_with(read.as_mut(), &probe).is_pending());
    }
    // A round trip on another socket of the same stack: the stack thread has done
    // whatever those polls asked of it by the time it returns.
    let udp = ustack::UdpSocket::bind(&p.b, addr(B, 0)).unwrap();
    let peer = ustack::UdpSocket::bind(&p.a, addr(A, 0)).unwrap();
    peer.send_to(b"x", udp.local_addr().unwrap()).unwrap();
    udp.recv_from(&mut [0; 4]).unwrap();
    assert_eq!(probe.wakes(), 0, "the read's own polls woke it");
    // Data does wake it, once.
    rt.block_on(async {
        let mut client = client;
        client.write_all(b"data").await.unwrap();
        woken.recv_timeout(PATIENCE).expect("data wakes the read");
        drop(client);
    });
    assert!(matches!(poll_with(read.as_mut(), &probe), Poll::Ready(Ok(4))));
}

/// A tokio listener on a stack of two shards accepts the connections of both shards: its
/// task is woken by whichever shard's round fills its queue there.
#[test]
fn accept_on_a_sharded_stack_takes_from_both_shards() {
    ustack::require_tun!();
    const CLIENTS: usize = 16;
    let lab = lab_sharded(2);
    let rt = runtime();
    let listener = TcpListener::bind(&lab.stack, addr("0.0.0.0", 7)).unwrap();
    let acceptor = rt.spawn(async move {
        let mut accepted = Vec::new();
        while accepted.len() < CLIENTS {
            accepted.push(listener.accept().await.unwrap().0);
        }
        accepted
    });
    let clients = lab
        .ns
        .run(|| {
            (0..CLIENTS).map(|_| KernelStream::connect_timeout(&addr(USTACK, 7), PATIENCE).unwrap()).collect::<Vec<_>>()
        })
        .unwrap();
    let accepted =
        rt.block_on(async { tokio::time::timeout(PATIENCE, acceptor).await }).expect("all accepted").unwrap();
    let shards: Vec<usize> =
        lab.stack.demux_table().rows.iter().filter(|r| r.state == "ESTABLISHED").map(|r| r.shard).collect();
    assert!(shards.contains(&0) && shards.contains(&1), "{shards:?}");
    drop((accepted, clients));
}
