//! A harness of our own in packetdrill's place: it loads `libustack_preload.so` the way
//! packetdrill's `--so_filename` does (dlopen, dlsym("packetdrill_interface_init"), one
//! call filling the table of packetdrill.h), then plays scenarios through that table:
//! packets in through netdev_send, the stack's packets out through netdev_receive, socket
//! calls, and time, which is the library's virtual clock. No packetdrill code is here; the
//! table below is declared as a C caller of packetdrill.h declares it.
//!
//! The library is the package's cdylib, which the harness has cargo build (see [`library`]),
//! at target/<profile>/libustack_preload.so.

use std::ffi::{CStr, CString, c_char, c_int, c_longlong, c_uint, c_ulong, c_void};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use libc::{epoll_event, iovec, msghdr, nfds_t, pollfd, size_t, sockaddr, socklen_t, ssize_t, timeval, useconds_t};

const STACK: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PORT: u16 = 8080;

/// `struct packetdrill_interface`, field for field.
#[repr(C)]
struct Interface {
    userdata: *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
    socket: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int) -> c_int,
    bind: unsafe extern "C" fn(*mut c_void, c_int, *const sockaddr, socklen_t) -> c_int,
    listen: unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int,
    accept: unsafe extern "C" fn(*mut c_void, c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    connect: unsafe extern "C" fn(*mut c_void, c_int, *const sockaddr, socklen_t) -> c_int,
    read: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t) -> ssize_t,
    readv: unsafe extern "C" fn(*mut c_void, c_int, *const iovec, c_int) -> ssize_t,
    recv: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t, c_int) -> ssize_t,
    recvfrom:
        unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t,
    recvmsg: unsafe extern "C" fn(*mut c_void, c_int, *mut msghdr, c_int) -> ssize_t,
    write: unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t) -> ssize_t,
    writev: unsafe extern "C" fn(*mut c_void, c_int, *const iovec, c_int) -> ssize_t,
    send: unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t, c_int) -> ssize_t,
    sendto:
        unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t,
    sendmsg: unsafe extern "C" fn(*mut c_void, c_int, *const msghdr, c_int) -> ssize_t,
    fcntl: unsafe extern "C" fn(*mut c_void, c_int, c_int, ...) -> c_int,
    ioctl: unsafe extern "C" fn(*mut c_void, c_int, c_ulong, ...) -> c_int,
    close: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    shutdown: unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int,
    getsockopt: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int,
    setsockopt: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *const c_void, socklen_t) -> c_int,
    poll: unsafe extern "C" fn(*mut c_void, *mut pollfd, nfds_t, c_int) -> c_int,
    netdev_send: unsafe extern "C" fn(*mut c_void, *const c_void, size_t) -> c_int,
    netdev_receive: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut size_t, *mut c_longlong) -> c_int,
    usleep: unsafe extern "C" fn(*mut c_void, useconds_t) -> c_int,
    gettimeofday: unsafe extern "C" fn(*mut c_void, *mut timeval, *mut c_void) -> c_int,
    epoll_create: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    epoll_ctl: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *mut epoll_event) -> c_int,
    epoll_wait: unsafe extern "C" fn(*mut c_void, c_int, *mut epoll_event, c_int, c_int) -> c_int,
    pipe: unsafe extern "C" fn(*mut c_void, *mut c_int) -> c_int,
    splice: unsafe extern "C" fn(*mut c_void, c_int, *mut i64, c_int, *mut i64, size_t, c_uint) -> c_int,
}

/// The loaded library and its table, as packetdrill holds them (an `so_instance`).
struct Drill {
    ifc: Interface,
    handle: *mut c_void,
}

// The table is made for packetdrill's two threads: its functions lock what they share.
unsafe impl Send for Drill {}
unsafe impl Sync for Drill {}

/// The library, built first: cargo does not build a cdylib-only package's library for its
/// integration tests (they cannot link it), so the harness asks cargo for it, as a user
/// would, once per run. It lands next to the test binary's directory.
fn library() -> &'static std::path::Path {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/packetdrill-HASH -> target/<profile>
        let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.args(["build", "--quiet", "-p", "ustack-preload"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|name| name == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "cargo build -p ustack-preload failed");
        let path = dir.join("libustack_preload.so");
        assert!(path.exists(), "{} is missing after cargo build -p ustack-preload", path.display());
        path
    })
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Drill {
    fn load(flags: &str) -> Drill {
        let path = CString::new(library().as_os_str().as_encoded_bytes()).expect("a path without NUL");
        // packetdrill's own flags for dlopen.
        let handle = unsafe {
            libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE | libc::RTLD_DEEPBIND)
        };
        if handle.is_null() {
            let err = unsafe { CStr::from_ptr(libc::dlerror()) };
            panic!("dlopen: {}", err.to_string_lossy());
        }
        let init = unsafe { libc::dlsym(handle, c"packetdrill_interface_init".as_ptr()) };
        assert!(!init.is_null(), "packetdrill_interface_init is not exported");
        type Init = unsafe extern "C" fn(*const c_char, *mut Interface);
        let init: Init = unsafe { std::mem::transmute::<*mut c_void, Init>(init) };
        // packetdrill callocs the table; init fills every field.
        let mut ifc = std::mem::MaybeUninit::<Interface>::zeroed();
        let flags = CString::new(flags).expect("flags without NUL");
        unsafe { init(flags.as_ptr(), ifc.as_mut_ptr()) };
        Drill { ifc: unsafe { ifc.assume_init() }, handle }
    }

    fn ud(&self) -> *mut c_void {
        self.ifc.userdata
    }

    /// A call's result, or its errno.
    fn check(&self, result: c_int) -> Result<c_int, c_int> {
        if result < 0 { Err(errno()) } else { Ok(result) }
    }

    fn listener(&self, backlog: c_int) -> c_int {
        let fd = unsafe { (self.ifc.socket)(self.ud(), libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_TCP) };
        assert!(fd >= 0, "socket: errno {}", errno());
        let one: c_int = 1;
        let r = unsafe {
            (self.ifc.setsockopt)(self.ud(), fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), 4)
        };
        assert_eq!(r, 0, "setsockopt: errno {}", errno());
        let sin = sockaddr_in(SocketAddr::new(STACK.into(), PORT));
        let r = unsafe { (self.ifc.bind)(self.ud(), fd, (&raw const sin).cast(), size_of_val(&sin) as socklen_t) };
        assert_eq!(r, 0, "bind: errno {}", errno());
        assert_eq!(unsafe { (self.ifc.listen)(self.ud(), fd, backlog) }, 0, "listen: errno {}", errno());
        fd
    }

    fn set_nonblocking(&self, fd: c_int) {
        // Called as a C caller calls the variadic fcntl.
        let flags = unsafe { (self.ifc.fcntl)(self.ud(), fd, libc::F_GETFL) };
        let r = unsafe { (self.ifc.fcntl)(self.ud(), fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        assert_eq!(r, 0);
        assert_ne!(unsafe { (self.ifc.fcntl)(self.ud(), fd, libc::F_GETFL) } & libc::O_NONBLOCK, 0);
    }

    /// accept(): the new fd and the peer's port.
    fn accept(&self, fd: c_int) -> Result<(c_int, u16), c_int> {
        let mut storage: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = size_of_val(&storage) as socklen_t;
        let r = unsafe { (self.ifc.accept)(self.ud(), fd, (&raw mut storage).cast(), &mut len) };
        let new = self.check(r)?;
        assert_eq!(c_int::from(storage.sin_family), libc::AF_INET);
        assert_eq!(u32::from_be(storage.sin_addr.s_addr), u32::from(PEER));
        Ok((new, u16::from_be(storage.sin_port)))
    }

    fn read(&self, fd: c_int) -> Result<Vec<u8>, c_int> {
        let mut buf = [0u8; 1024];
        let n = unsafe { (self.ifc.read)(self.ud(), fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 { Err(errno()) } else { Ok(buf[..n as usize].to_vec()) }
    }

    fn write(&self, fd: c_int, data: &[u8]) -> isize {
        unsafe { (self.ifc.write)(self.ud(), fd, data.as_ptr().cast(), data.len()) }
    }

    fn close(&self, fd: c_int) {
        assert_eq!(unsafe { (self.ifc.close)(self.ud(), fd) }, 0, "close: errno {}", errno());
    }

    fn inject(&self, packet: &[u8]) -> c_int {
        unsafe { (self.ifc.netdev_send)(self.ud(), packet.as_ptr().cast(), packet.len()) }
    }

    /// The stack's next packet and its virtual timestamp (µs), None if it has nothing
    /// more to send, ever.
    fn sniff(&self) -> Option<(i64, Segment)> {
        let mut buf = vec![0u8; 65536];
        let mut count = buf.len();
        let mut time: c_longlong = 0;
        let r = unsafe { (self.ifc.netdev_receive)(self.ud(), buf.as_mut_ptr().cast(), &mut count, &mut time) };
        assert_eq!(r, 0, "netdev_receive: errno {}", errno());
        (count > 0).then(|| (time, Segment::parse(&buf[..count])))
    }

    fn sniff_some(&self) -> (i64, Segment) {
        self.sniff().expect("a packet from the stack")
    }

    fn sleep(&self, micros: u32) {
        assert_eq!(unsafe { (self.ifc.usleep)(self.ud(), micros) }, 0);
    }

    fn now(&self) -> i64 {
        let mut tv: timeval = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { (self.ifc.gettimeofday)(self.ud(), &mut tv, std::ptr::null_mut()) }, 0);
        tv.tv_sec * 1_000_000 + tv.tv_usec
    }

    /// The peer's SYN from `port`, answered: returns the stack's SYN-ACK.
    fn syn(&self, port: u16, seq: u32) -> Segment {
        assert_eq!(self.inject(&segment(port, seq, None, Flags::Syn, b"")), 0);
        let (_, synack) = self.sniff_some();
        synack
    }

    /// A full handshake from `port` (the peer's ISN `seq`); returns the stack's ISN.
    fn connect_from(&self, port: u16, seq: u32) -> u32 {
        let synack = self.syn(port, seq);
        assert!(synack.syn && synack.ack_flag, "{synack:?}");
        assert_eq!(self.inject(&segment(port, seq + 1, Some(synack.seq + 1), Flags::Ack, b"")), 0);
        synack.seq
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        unsafe {
            (self.ifc.free)(self.ifc.userdata);
            libc::dlclose(self.handle);
        }
    }
}

fn sockaddr_in(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only here") };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Flags {
    Syn,
    Ack,
    Data,
}

/// A bare IPv4 packet from the peer's `port` to the stack's listener.
fn segment(port: u16, seq: u32, ack: Option<u32>, flags: Flags, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(PEER.octets(), STACK.octets(), 64).tcp(port, PORT, seq, 65535);
    if let Some(ack) = ack {
        b = b.ack(ack);
    }
    b = match flags {
        Flags::Syn => b.syn().options(&[TcpOptionElement::MaximumSegmentSize(1460)]).expect("options fit"),
        Flags::Data => b.psh(),
        Flags::Ack => b,
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).expect("a packet");
    out
}

/// What the harness checks of a packet the stack sent.
#[derive(Debug, Clone)]
#[allow(dead_code)] // Read through Debug in failure messages.
struct Segment {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    syn: bool,
    ack_flag: bool,
    fin: bool,
    rst: bool,
    mss: Option<u16>,
    payload: Vec<u8>,
}

impl Segment {
    fn parse(packet: &[u8]) -> Segment {
        let sliced = SlicedPacket::from_ip(packet).expect("the stack sends well-formed IP");
        let (src, dst) = match &sliced.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => {
                (ip.header().source_addr().into(), ip.header().destination_addr().into())
            }
            Some(etherparse::NetSlice::Ipv6(ip)) => {
                (ip.header().source_addr().into(), ip.header().destination_addr().into())
            }
            _ => panic!("IP expected"),
        };
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else { panic!("TCP expected") };
        let mss = tcp.options_iterator().find_map(|o| match o {
            Ok(TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        });
        Segment {
            src,
            dst,
            sport: tcp.source_port(),
            dport: tcp.destination_port(),
            seq: tcp.sequence_number(),
            ack: tcp.acknowledgment_number(),
            syn: tcp.syn(),
            ack_flag: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            mss,
            payload: tcp.payload().to_vec(),
        }
    }
}

#[test]
fn a_blocking_accept_returns_when_the_injected_handshake_completes_and_data_flows_both_ways() {
    let drill = std::sync::Arc::new(Drill::load(""));
    let listener = drill.listener(1);
    // packetdrill makes a blocking call on a thread of its own and goes on injecting.
    let acceptor = {
        let drill = drill.clone();
        std::thread::spawn(move || drill.accept(listener))
    };
    assert_eq!(drill.inject(&segment(40000, 1000, None, Flags::Syn, b"")), 0);
    let (synack_at, synack) = drill.sniff_some();
    assert!(synack.syn && synack.ack_flag && !synack.rst, "{synack:?}");
    assert_eq!(
        (synack.src, synack.dst, synack.sport, synack.dport),
        (IpAddr::V4(STACK), IpAddr::V4(PEER), PORT, 40000)
    );
    assert_eq!(synack.ack, 1001);
    assert_eq!(synack.mss, Some(1460), "the SYN-ACK offers an MSS for a 1500-byte MTU");
    // No ACK yet: accept() cannot have returned.
    assert!(!acceptor.is_finished());

    assert_eq!(drill.inject(&segment(40000, 1001, Some(synack.seq + 1), Flags::Ack, b"")), 0);
    let (fd, peer_port) = acceptor.join().expect("the accepting thread").expect("accept");
    assert_eq!(peer_port, 40000);

    assert_eq!(drill.inject(&segment(40000, 1001, Some(synack.seq + 1), Flags::Data, b"hello")), 0);
    assert_eq!(drill.read(fd).expect("read"), b"hello");
    assert_eq!(drill.write(fd, b"world!!"), 7);
    let (sent_at, data) = drill.sniff_some();
    assert_eq!(data.payload, b"world!!");
    assert_eq!((data.seq, data.ack), (synack.seq + 1, 1006), "the reply carries the ACK of hello");
    assert!(sent_at >= synack_at);

    drill.close(fd);
    let (_, fin) = drill.sniff_some();
    assert!(fin.fin && fin.ack_flag, "{fin:?}");
    assert_eq!(fin.seq, synack.seq + 8);
    drill.close(listener);
}

#[test]
fn an_unacknowledged_syn_ack_is_resent_after_the_rto_of_virtual_time() {
    let drill = Drill::load("");
    let _listener = drill.listener(1);
    let before = drill.now();
    assert_eq!(drill.inject(&segment(40000, 1000, None, Flags::Syn, b"")), 0);
    let (first_at, first) = drill.sniff_some();
    assert_eq!(first_at, before, "answered at the instant of the SYN, on the virtual clock");
    // Sniffing with nothing queued moves the virtual clock to the retransmission.
    let (again_at, again) = drill.sniff_some();
    assert!(again.syn && again.ack_flag);
    assert_eq!(again.seq, first.seq, "the same SYN-ACK again");
    assert_eq!(again_at - first_at, 1_000_000, "smoltcp's initial RTO: one second of virtual time");
    // Virtual time: the clock now reads past the retransmission, however fast the machine.
    assert!(drill.now() >= again_at);
}

#[test]
fn backlog_one_holds_two_connections_answers_the_second_syn_with_a_cookie_and_drops_the_third() {
    let drill = Drill::load("");
    let listener = drill.listener(1);
    drill.set_nonblocking(listener);
    assert_eq!(drill.accept(listener), Err(libc::EAGAIN));

    // A's SYN takes the one place in the SYN queue; B's finds it full: a SYN cookie.
    let synack_a = drill.syn(40001, 1000);
    let synack_b = drill.syn(40002, 2000);
    assert!(synack_b.syn && synack_b.ack_flag && synack_b.ack == 2001, "{synack_b:?}");
    // A cookie keeps no state, so only A's SYN-ACK is sent again, an RTO later.
    let (_, resent) = drill.sniff_some();
    assert!(resent.syn && resent.dport == 40001, "{resent:?}");
    // Both complete: the accept queue holds backlog + 1 = 2.
    assert_eq!(drill.inject(&segment(40001, 1001, Some(synack_a.seq + 1), Flags::Ack, b"")), 0);
    assert_eq!(drill.inject(&segment(40002, 2001, Some(synack_b.seq + 1), Flags::Ack, b"")), 0);

    // C finds the accept queue full: its SYN is dropped, unanswered.
    assert_eq!(drill.inject(&segment(40003, 3000, None, Flags::Syn, b"")), 0);
    let mut answered_c = false;
    while let Some((_, seg)) = drill.sniff() {
        answered_c |= seg.dport == 40003;
    }
    assert!(!answered_c, "a SYN beyond the backlog is dropped, as Linux drops it");

    let (a, port_a) = drill.accept(listener).expect("A");
    let (b, port_b) = drill.accept(listener).expect("B");
    assert_eq!((port_a, port_b), (40001, 40002), "accepted in the order they completed");
    assert_eq!(drill.accept(listener), Err(libc::EAGAIN));
    // With room again, C's retransmitted SYN is answered.
    let synack_c = drill.syn(40003, 3000);
    assert!(synack_c.syn && synack_c.dport == 40003);
    drill.close(a);
    drill.close(b);
}

#[test]
fn two_connections_to_one_listener_each_get_their_own_data_and_an_unknown_tuple_gets_rst() {
    let drill = Drill::load("");
    let listener = drill.listener(8);
    let isn_one = drill.connect_from(40001, 1000);
    let isn_two = drill.connect_from(40002, 5000);
    // Data arrives in the opposite order to the connections.
    assert_eq!(drill.inject(&segment(40002, 5001, Some(isn_two + 1), Flags::Data, b"two")), 0);
    assert_eq!(drill.inject(&segment(40001, 1001, Some(isn_one + 1), Flags::Data, b"one")), 0);
    for _ in 0..2 {
        let (fd, port) = drill.accept(listener).expect("accept");
        let expected: &[u8] = if port == 40001 { b"one" } else { b"two" };
        assert_eq!(drill.read(fd).expect("read"), expected, "connection from port {port}");
        drill.close(fd);
    }

    // An ACK for a connection that does not exist: RST, its sequence number taken from
    // the ACK (RFC 9293 3.10.7.1). It comes after the FINs the closes sent.
    assert_eq!(drill.inject(&segment(40009, 777, Some(4242), Flags::Ack, b"")), 0);
    let (_, rst) = (0..3).map(|_| drill.sniff_some()).find(|(_, seg)| seg.dport == 40009).expect("an answer");
    assert!(rst.rst && rst.dport == 40009, "{rst:?}");
    assert_eq!(rst.seq, 4242);
}

#[test]
fn time_passes_only_when_told() {
    let drill = Drill::load("");
    let start = drill.now();
    drill.sleep(250_000);
    let after = drill.now();
    // Each reading moves the clock by a microsecond (packetdrill spins on it).
    assert!((250_000..250_010).contains(&(after - start)), "{}", after - start);
}

#[test]
fn bad_flags_make_every_call_fail_with_einval() {
    let drill = Drill::load("colour=blue");
    let fd = unsafe { (drill.ifc.socket)(drill.ud(), libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert_eq!((fd, errno()), (-1, libc::EINVAL));
    assert_eq!(drill.inject(b"\x45"), -1);
}

#[test]
fn garbage_from_the_wire_and_bad_arguments_get_errors_not_crashes() {
    let drill = Drill::load("");
    let listener = drill.listener(1);
    for junk in [&b"\x45"[..], &[0u8; 40], &[0x60; 60], &[0xff; 1500]] {
        assert!(drill.inject(junk) >= -1);
    }
    assert_eq!(drill.inject(&[]), -1);
    assert_eq!(drill.check(unsafe { (drill.ifc.listen)(drill.ud(), 12345, 1) }), Err(libc::EBADF));
    let unix: libc::sa_family_t = libc::AF_UNIX as _;
    let fd = unsafe { (drill.ifc.socket)(drill.ud(), libc::AF_INET, libc::SOCK_STREAM, 0) };
    let r = unsafe { (drill.ifc.bind)(drill.ud(), fd, (&raw const unix).cast(), 2) };
    assert_eq!(drill.check(r), Err(libc::EINVAL));
    let r = unsafe { (drill.ifc.epoll_create)(drill.ud(), 1) };
    assert_eq!(drill.check(r), Err(libc::ENOSYS));
    let r = unsafe { (drill.ifc.socket)(drill.ud(), libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    assert_eq!(drill.check(r), Err(libc::EAFNOSUPPORT));
    // The stack still works.
    let synack = drill.syn(40000, 1);
    assert!(synack.syn && synack.ack_flag);
    drill.close(listener);
}

#[test]
fn poll_times_out_on_the_virtual_clock_and_wakes_for_a_connection() {
    let drill = std::sync::Arc::new(Drill::load(""));
    let listener = drill.listener(1);
    let poll = |timeout: c_int| {
        let drill = drill.clone();
        std::thread::spawn(move || {
            let mut fds = [pollfd { fd: listener, events: libc::POLLIN, revents: 0 }];
            let n = unsafe { (drill.ifc.poll)(drill.ud(), fds.as_mut_ptr(), 1, timeout) };
            (n, fds[0].revents)
        })
    };
    // Nothing happens: poll() returns 0 once 300 ms of virtual time have passed, not before.
    let start = drill.now();
    let waiting = poll(300);
    for _ in 0..10_000 {
        if waiting.is_finished() {
            break;
        }
        drill.sleep(10_000);
        std::thread::yield_now();
    }
    let end = drill.now();
    assert_eq!(waiting.join().expect("poll"), (0, 0));
    assert!(end - start >= 300_000, "poll returned after {} µs of a 300 ms timeout", end - start);

    // A connection completing wakes a poll() without a timeout.
    let waiting = poll(-1);
    drill.connect_from(40000, 1);
    assert_eq!(waiting.join().expect("poll"), (1, libc::POLLIN));
}

#[test]
fn so_flags_reach_the_engine_without_cookies_a_syn_beyond_the_syn_queue_is_dropped() {
    let drill = Drill::load("addr=10.0.0.1/24,seed=9 syncookies=0");
    let _listener = drill.listener(1);
    let synack_a = drill.syn(40001, 1000);
    assert_eq!(synack_a.dport, 40001);
    // B finds the SYN queue (one place, for A) full, and no cookies: nothing is sent for
    // it, ever; A's SYN-ACK is resent meanwhile.
    assert_eq!(drill.inject(&segment(40002, 2000, None, Flags::Syn, b"")), 0);
    let mut answered_b = false;
    let mut resent_a = 0;
    while let Some((_, seg)) = drill.sniff() {
        answered_b |= seg.dport == 40002;
        resent_a += usize::from(seg.dport == 40001 && seg.syn);
    }
    assert!(!answered_b, "no SYN cookie when syncookies=0");
    assert!(resent_a >= 5, "A's SYN-ACK resent until its half-open timeout ({resent_a} times)");
}

#[test]
fn ipv6_through_the_same_table() {
    let drill = Drill::load("addr=fd00::1/64");
    let (stack, peer): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
    let fd = unsafe { (drill.ifc.socket)(drill.ud(), libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
    assert!(fd >= 0, "socket: errno {}", errno());
    let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_port = PORT.to_be();
    let r = unsafe { (drill.ifc.bind)(drill.ud(), fd, (&raw const sin6).cast(), size_of_val(&sin6) as socklen_t) };
    assert_eq!(r, 0, "bind: errno {}", errno());
    assert_eq!(unsafe { (drill.ifc.listen)(drill.ud(), fd, 1) }, 0);

    let mut syn = Vec::new();
    PacketBuilder::ipv6(peer.octets(), stack.octets(), 64)
        .tcp(40000, PORT, 7, 65535)
        .syn()
        .write(&mut syn, b"")
        .expect("a packet");
    assert_eq!(drill.inject(&syn), 0);
    let (_, synack) = drill.sniff_some();
    assert!(synack.syn && synack.ack_flag && synack.ack == 8, "{synack:?}");
    assert_eq!((synack.src, synack.dst), (IpAddr::V6(stack), IpAddr::V6(peer)));
    let mut ack = Vec::new();
    PacketBuilder::ipv6(peer.octets(), stack.octets(), 64)
        .tcp(40000, PORT, 8, 65535)
        .ack(synack.seq + 1)
        .write(&mut ack, b"")
        .expect("a packet");
    assert_eq!(drill.inject(&ack), 0);

    let mut storage: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut len = size_of_val(&storage) as socklen_t;
    let new = unsafe { (drill.ifc.accept)(drill.ud(), fd, (&raw mut storage).cast(), &mut len) };
    assert!(new >= 0, "accept: errno {}", errno());
    assert_eq!(len as usize, size_of_val(&storage));
    assert_eq!(Ipv6Addr::from(storage.sin6_addr.s6_addr), peer);
    assert_eq!(u16::from_be(storage.sin6_port), 40000);
}
