//! The hand-off: packets an API call makes leave from the calling thread, in the order
//! the engine made them, whichever thread writes them.

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use smoltcp::phy::{Device, DeviceCapabilities};
use smoltcp::time::Instant;

use crate::device::{Link, Wire, WireEnd};
use crate::{Domain, Socket, Stack, StackConfig, Type};

/// Which thread wrote each packet, in the order they were written.
type Writers = Arc<Mutex<Vec<ThreadId>>>;

/// A wire end that notes the thread of every packet written to it.
struct Recorder {
    inner: WireEnd,
    writers: Writers,
}

impl Device for Recorder {
    type RxToken<'a> = <WireEnd as Device>::RxToken<'a>;
    type TxToken<'a> = <WireEnd as Device>::TxToken<'a>;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.inner.receive(now)
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

impl Link for Recorder {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.inner.wait_fd()
    }

    fn receive_into(&mut self, now: Instant, frame: &mut Vec<u8>) -> bool {
        self.inner.receive_into(now, frame)
    }

    fn transmit_from(&mut self, now: Instant, frame: &[u8]) -> bool {
        self.writers.lock().unwrap().push(std::thread::current().id());
        self.inner.transmit_from(now, frame)
    }
}

/// A stack at 10.0.0.2 on a recording wire; the other end is the test's.
fn stack() -> (Stack, WireEnd, Writers) {
    let (a, b) = Wire::pair(1500).unwrap();
    let writers = Writers::default();
    let device = Recorder { inner: a, writers: writers.clone() };
    let config = StackConfig { addrs: vec!["10.0.0.2/24".parse().unwrap()], ..Default::default() };
    (Stack::new(device, config).unwrap(), b, writers)
}

/// The UDP payload of the next frame at `end`, waiting for it (up to 5 s).
fn next_payload(end: &WireEnd) -> Vec<u8> {
    for _ in 0..2 {
        if let Some(frame) = end.recv_raw() {
            // IPv4 without options, then the UDP header.
            return frame[28..].to_vec();
        }
        let mut fds = [nix::poll::PollFd::new(end.wait_fd(), nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
    }
    panic!("no frame within 5 s");
}

#[test]
fn a_datagram_is_written_by_the_thread_that_sends_it() {
    let (stack, peer, writers) = stack();
    let socket = Socket::new(&stack, Domain::Inet, Type::Dgram).unwrap();
    socket.bind("10.0.0.2:5000".parse().unwrap()).unwrap();
    let me = std::thread::current().id();
    const SENDS: u8 = 20;
    for i in 0..SENDS {
        socket.send_to(&[i], "10.0.0.1:6000".parse().unwrap()).unwrap();
        assert_eq!(next_payload(&peer), [i]);
    }
    // The stack thread may happen to be at the device (woken for a timer) as a send
    // comes, and then writes that datagram itself; most must be the caller's own.
    let writers = writers.lock().unwrap();
    let by_caller = writers.iter().filter(|&&id| id == me).count();
    assert!(by_caller > usize::from(SENDS) / 2, "{by_caller} of {SENDS} datagrams written by the sending thread");
}

#[test]
fn datagrams_from_many_threads_keep_each_threads_order() {
    let (stack, peer, _) = stack();
    const THREADS: u8 = 4;
    const EACH: u8 = 100;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let stack = &stack;
            scope.spawn(move || {
                let socket = Socket::new(stack, Domain::Inet, Type::Dgram).unwrap();
                socket.bind(format!("10.0.0.2:{}", 5000 + u16::from(t)).parse().unwrap()).unwrap();
                for i in 0..EACH {
                    socket.send_to(&[t, i], "10.0.0.1:6000".parse().unwrap()).unwrap();
                }
            });
        }
    });
    let mut next = [0u8; THREADS as usize];
    for _ in 0..u32::from(THREADS) * u32::from(EACH) {
        let payload = next_payload(&peer);
        let (t, i) = (usize::from(payload[0]), payload[1]);
        assert_eq!(i, next[t], "thread {t}'s datagrams out of order");
        next[t] += 1;
    }
    assert!(peer.recv_raw().is_none());
}
