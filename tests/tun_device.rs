//! TunDevice against the real kernel, each test inside its own anonymous network
//! namespace (nothing is configured or sent in the host's namespace).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant as StdInstant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use smoltcp::phy::{ChecksumCapabilities, Device, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address,
    Ipv6Packet, Ipv6Repr,
};
use ustack::device::{Link, TunConfig, TunDevice};
use ustack::sys::NetNs;
use ustack::sys::netlink::Netlink;

const TIMEOUT: Duration = Duration::from_secs(5);
const KERNEL_V4: Ipv4Address = Ipv4Address::new(10, 7, 0, 1);
const STACK_V4: Ipv4Address = Ipv4Address::new(10, 7, 0, 2);
const KERNEL_V6: Ipv6Address = Ipv6Address::new(0xfd00, 7, 0, 0, 0, 0, 0, 1);
const STACK_V6: Ipv6Address = Ipv6Address::new(0xfd00, 7, 0, 0, 0, 0, 0, 2);

fn config(name: &str) -> TunConfig {
    TunConfig {
        name: name.into(),
        peer_addrs: vec![ustack::Cidr::new(KERNEL_V4, 24).unwrap(), ustack::Cidr::new(KERNEL_V6, 64).unwrap()],
        mtu: Some(1400),
        offload: true,
    }
}

fn open_in(ns: &NetNs, config: &TunConfig) -> io::Result<TunDevice> {
    ns.run(|| TunDevice::open(config)).expect("entering the namespace")
}

/// Feeds every packet the device receives to `matcher` until it returns `Some`, waiting
/// on `wait_fd` with poll(2) up to [`TIMEOUT`]. Unrelated packets (the kernel's own IPv6
/// router solicitations and MLD reports) are skipped.
fn wait_for<T>(dev: &mut TunDevice, mut matcher: impl FnMut(&[u8]) -> Option<T>) -> T {
    let deadline = StdInstant::now() + TIMEOUT;
    loop {
        while let Some((rx, _tx)) = dev.receive(Instant::now()) {
            if let Some(found) = rx.consume(&mut matcher) {
                return found;
            }
        }
        if let Some(e) = dev.take_error() {
            panic!("device failed: {e}");
        }
        let left = deadline.saturating_duration_since(StdInstant::now());
        assert!(!left.is_zero(), "no matching packet within {TIMEOUT:?}");
        let mut fds = [PollFd::new(dev.wait_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::try_from(left).unwrap()).expect("poll");
    }
}

fn send_echo_v4(dev: &mut TunDevice, ident: u16, seq_no: u16, data: &[u8]) {
    let caps = ChecksumCapabilities::default();
    let icmp = Icmpv4Repr::EchoRequest { ident, seq_no, data };
    let ip = Ipv4Repr {
        src_addr: STACK_V4,
        dst_addr: KERNEL_V4,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let tx = dev.transmit(Instant::now()).expect("transmit token");
    tx.consume(ip.buffer_len() + icmp.buffer_len(), |buf| {
        let mut packet = Ipv4Packet::new_unchecked(buf);
        ip.emit(&mut packet, &caps);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(packet.payload_mut()), &caps);
    });
}

fn send_echo_v6(dev: &mut TunDevice, ident: u16, seq_no: u16, data: &[u8]) {
    let caps = ChecksumCapabilities::default();
    let icmp = Icmpv6Repr::EchoRequest { ident, seq_no, data };
    let ip = Ipv6Repr {
        src_addr: STACK_V6,
        dst_addr: KERNEL_V6,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let tx = dev.transmit(Instant::now()).expect("transmit token");
    tx.consume(ip.buffer_len() + icmp.buffer_len(), |buf| {
        let mut packet = Ipv6Packet::new_unchecked(buf);
        ip.emit(&mut packet);
        icmp.emit(&STACK_V6, &KERNEL_V6, &mut Icmpv6Packet::new_unchecked(packet.payload_mut()), &caps);
    });
}

#[test]
fn kernel_answers_ipv4_and_ipv6_ping() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let mut dev = open_in(&ns, &config("ustack0")).unwrap();
    // The TUN's own kernel socket holds the namespace: the device outlives the handle.
    drop(ns);
    assert_eq!(dev.name(), "ustack0");
    assert_eq!(dev.mtu(), 1400);
    let caps = dev.capabilities();
    assert_eq!(caps.medium, Medium::Ip);
    assert_eq!(caps.max_transmission_unit, 1400);

    let payload = b"ustack tun test payload";
    send_echo_v4(&mut dev, 0x1234, 7, payload);
    let caps = ChecksumCapabilities::default();
    let (src, dst, hop_limit, ident, seq_no, data) = wait_for(&mut dev, |frame| {
        let packet = Ipv4Packet::new_checked(frame).ok()?;
        let ip = Ipv4Repr::parse(&packet, &caps).ok()?;
        if ip.next_header != IpProtocol::Icmp {
            return None;
        }
        let icmp = Icmpv4Packet::new_checked(packet.payload()).ok()?;
        match Icmpv4Repr::parse(&icmp, &caps).expect("valid ICMP checksum") {
            Icmpv4Repr::EchoReply { ident, seq_no, data } => {
                Some((ip.src_addr, ip.dst_addr, ip.hop_limit, ident, seq_no, data.to_vec()))
            }
            _ => None,
        }
    });
    assert_eq!((src, dst), (KERNEL_V4, STACK_V4));
    assert!(hop_limit > 0);
    assert_eq!((ident, seq_no), (0x1234, 7));
    assert_eq!(data, payload);

    // IPv6 works at once: the address was added without duplicate address detection.
    send_echo_v6(&mut dev, 0x4321, 9, payload);
    let (src, dst, ident, seq_no, data) = wait_for(&mut dev, |frame| {
        let packet = Ipv6Packet::new_checked(frame).ok()?;
        let ip = Ipv6Repr::parse(&packet).ok()?;
        if ip.next_header != IpProtocol::Icmpv6 {
            return None;
        }
        let icmp = Icmpv6Packet::new_checked(packet.payload()).ok()?;
        match Icmpv6Repr::parse(&ip.src_addr, &ip.dst_addr, &icmp, &caps).ok()? {
            Icmpv6Repr::EchoReply { ident, seq_no, data } => {
                Some((ip.src_addr, ip.dst_addr, ident, seq_no, data.to_vec()))
            }
            _ => None,
        }
    });
    assert_eq!((src, dst), (KERNEL_V6, STACK_V6));
    assert_eq!((ident, seq_no), (0x4321, 9));
    assert_eq!(data, payload);

    let stats = dev.stats();
    assert_eq!(stats.tx_packets, 2);
    assert!(stats.rx_packets >= 2);
    assert_eq!(stats.tx_dropped, 0);
    assert!(dev.take_error().is_none());
}

#[test]
fn addresses_already_present_are_accepted() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let _dev = open_in(&ns, &config("ustack1")).unwrap();
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let link = nl.link_by_name("ustack1").unwrap().expect("interface exists");
        assert!(link.up);
        assert_eq!(link.mtu, 1400);
        // EEXIST from the kernel is success: configuring twice is harmless.
        nl.add_address(link.index, KERNEL_V4.into(), 24).expect("IPv4 EEXIST is accepted");
        nl.add_address(link.index, KERNEL_V6.into(), 64).expect("IPv6 EEXIST is accepted");
    })
    .unwrap();
}

#[test]
fn impossible_configs_are_errors_not_panics() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();

    let err = open_in(&ns, &TunConfig { name: "a-name-longer-than-15".into(), ..config("") }).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("longer than 15"), "{err}");

    // `lo` exists and is not a TUN: TUNSETIFF refuses it.
    let err = open_in(&ns, &TunConfig { name: "lo".into(), ..config("") }).unwrap_err();
    assert!(err.to_string().contains("opening TUN lo"), "{err}");

    // The kernel rejects the MTU; the netlink NACK becomes the error.
    let err = open_in(&ns, &TunConfig { mtu: Some(10), ..config("ustack2") }).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("MTU 10"), "{err}");

    // IPv6 is disabled on links with an MTU below 1280, so the address cannot be added.
    let err = open_in(&ns, &TunConfig { mtu: Some(1000), ..config("ustack2") }).unwrap_err();
    assert!(err.to_string().contains("at least 1280"), "{err}");

    // A non-persistent TUN can be attached only once.
    let _first = open_in(&ns, &config("ustack2")).unwrap();
    let err = open_in(&ns, &config("ustack2")).unwrap_err();
    assert!(err.to_string().contains("opening TUN ustack2"), "{err}");
}

/// Packets the kernel routes into the TUN wait there until the stack reads them. The
/// kernel's default queue for a TUN is 500 packets; a burst of a thousand connects puts
/// three thousand in at once (a SYN, an ACK and a request per client), so the device asks
/// for 4096, and a burst of 3000 arrives whole.
#[test]
fn a_burst_of_3000_packets_waits_in_the_tun_for_the_stack() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let mut dev = open_in(&ns, &config("ustack6")).unwrap();
    const BURST: usize = 3000;
    ns.run(|| {
        // Thirty sockets of 100 datagrams: each socket's send buffer holds its share while
        // the datagrams wait in the TUN, nobody reading it yet.
        for s in 0..30 {
            let socket = std::net::UdpSocket::bind("10.7.0.1:0").unwrap();
            for i in 0..BURST / 30 {
                socket.send_to(&[s as u8, i as u8], "10.7.0.2:9").unwrap();
            }
        }
    })
    .unwrap();
    let mut datagrams = 0;
    while let Some((rx, _tx)) = dev.receive(Instant::now()) {
        rx.consume(|frame| {
            let packet = Ipv4Packet::new_checked(frame).ok().filter(|p| p.version() == 4);
            if packet.is_some_and(|p| p.next_header() == IpProtocol::Udp) {
                datagrams += 1;
            }
        });
    }
    assert_eq!(datagrams, BURST, "every datagram queued, none dropped");
    let link = ns.run(|| Netlink::open().unwrap().link_by_name("ustack6").unwrap().unwrap()).unwrap();
    assert!(link.tx_queue_len >= 4096, "txqueuelen {}", link.tx_queue_len);
}

#[test]
fn interface_down_drops_packets_without_failing() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let mut dev = open_in(&ns, &config("ustack5")).unwrap();
    let set_state = |up: bool| {
        ns.run(|| {
            let mut nl = Netlink::open().unwrap();
            let link = nl.link_by_name("ustack5").unwrap().unwrap();
            if up { nl.set_up(link.index) } else { nl.set_down(link.index) }.unwrap();
        })
        .unwrap()
    };

    set_state(false);
    send_echo_v4(&mut dev, 1, 1, b"lost");
    assert_eq!(dev.tx_dropped(), 1);
    assert!(dev.take_error().is_none());

    set_state(true);
    send_echo_v4(&mut dev, 1, 2, b"found");
    let seq = wait_for(&mut dev, |frame| {
        let packet = Ipv4Packet::new_checked(frame).ok().filter(|p| p.version() == 4)?;
        let icmp = Icmpv4Packet::new_checked(packet.payload()).ok()?;
        match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).ok()? {
            Icmpv4Repr::EchoReply { seq_no, .. } => Some(seq_no),
            _ => None,
        }
    });
    assert_eq!(seq, 2);
    assert_eq!(dev.stats().tx_packets, 1);
}

#[test]
fn interface_deleted_under_the_device_is_reported_once() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let mut dev = open_in(&ns, &config("ustack3")).unwrap();
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let link = nl.link_by_name("ustack3").unwrap().expect("interface exists");
        nl.delete_link(link.index).unwrap();
        assert!(nl.link_by_name("ustack3").unwrap().is_none());
    })
    .unwrap();

    // Drain whatever the kernel queued before the deletion; the read after it fails.
    let deadline = StdInstant::now() + TIMEOUT;
    let err = loop {
        while dev.receive(Instant::now()).is_some() {}
        if let Some(err) = dev.take_error() {
            break err;
        }
        assert!(StdInstant::now() < deadline, "deleted interface not reported");
        let mut fds = [PollFd::new(dev.wait_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(100u16)).expect("poll");
    };
    assert!(err.to_string().contains("ustack3"), "{err}");
    // Reported once, and the device stays stopped instead of spinning or panicking.
    assert!(dev.take_error().is_none());
    assert!(dev.receive(Instant::now()).is_none());
    assert!(dev.transmit(Instant::now()).is_none());
}

#[test]
fn write_error_stops_the_device() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let mut dev = open_in(&ns, &config("ustack4")).unwrap();
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let link = nl.link_by_name("ustack4").unwrap().unwrap();
        nl.delete_link(link.index).unwrap();
    })
    .unwrap();
    send_echo_v4(&mut dev, 1, 1, b"x");
    let err = dev.take_error().expect("write to a deleted TUN fails");
    assert!(err.to_string().contains("writing to TUN ustack4"), "{err}");
    assert!(dev.transmit(Instant::now()).is_none());
}

/// The inode of a namespace file, as shown in `net:[inode]` links under /proc.
fn ns_inode(path: &Path) -> Option<String> {
    std::fs::read_link(path).ok().map(|p| p.to_string_lossy().into_owned())
}

#[test]
fn tun_lives_only_inside_its_namespace() {
    ustack::require_tun!();
    let name = "ustackiso0";
    let ns = NetNs::new().unwrap();
    let dev = open_in(&ns, &config(name)).unwrap();

    let (inside, ns_link) = ns
        .run(|| {
            let link = Netlink::open().unwrap().link_by_name(name).unwrap();
            (link, ns_inode(Path::new("/proc/thread-self/ns/net")))
        })
        .unwrap();
    let inside = inside.expect("TUN visible inside the namespace");
    assert!(inside.up);
    assert_eq!(inside.mtu, 1400);

    // The test thread is in the host namespace: the TUN is not there.
    assert!(Netlink::open().unwrap().link_by_name(name).unwrap().is_none());
    assert!(!Path::new("/sys/class/net").join(name).exists());
    assert_ne!(ns_inode(Path::new("/proc/thread-self/ns/net")), ns_link);

    // A spawned thread sees the same namespace, and so the TUN.
    let seen = ns.spawn(move || Netlink::open().unwrap().link_by_name(name).unwrap().is_some()).unwrap();
    assert!(seen.join().unwrap());

    drop(dev);
    assert!(ns.run(|| Netlink::open().unwrap().link_by_name(name).unwrap()).unwrap().is_none());
    drop(ns);

    // No thread of this process is left inside the namespace, so it is gone. A joined
    // thread may linger a moment in /proc (join returns before the kernel finishes the
    // exit), hence the bounded retry.
    let ns_link = ns_link.expect("namespace link");
    let in_namespace = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| ns_inode(&task.ok()?.path().join("ns/net")))
            .any(|link| link == ns_link)
    };
    let deadline = StdInstant::now() + TIMEOUT;
    while in_namespace() {
        assert!(StdInstant::now() < deadline, "a thread is still inside the namespace");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!Path::new("/sys/class/net").join(name).exists());
}
