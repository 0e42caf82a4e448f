//! TUN offloads against the kernel: with `IFF_VNET_HDR` the kernel hands ustack TCP
//! super-segments longer than the MTU and takes ustack's, and the bytes still arrive
//! intact; without offloads (asked off, or a TUN fd opened without them) every frame fits
//! the MTU. Frames are watched through a pcap recorder between the stack and the TUN,
//! which sees what the stack sees: one record per super-segment, its whole length.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ustack::device::{PcapRecorder, TunConfig, TunDevice};
use ustack::sys::NetNs;
use ustack::{StackConfig, TcpListener};
use ustack_testkit::lab::{KERNEL, KERNEL6, Lab, LabNet, USTACK, USTACK6};
use ustack_testkit::{addr, kernel_echo, pattern};

const PATIENCE: Duration = Duration::from_secs(20);
/// The lab's TUN MTU (the kernel's default).
const MTU: usize = 1500;
/// Enough for many windows' worth of super-segments each way.
const BYTES: usize = 8 << 20;

/// A pcap file being written, shared with the test.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// The longest frame (its original length) sent by `src`, and how many frames from it
    /// exceed the MTU.
    fn longest_from(&self, src: IpAddr) -> (usize, usize) {
        let bytes = self.0.lock().unwrap();
        let mut at = 24; // the file header
        let (mut longest, mut over) = (0, 0);
        while at + 16 <= bytes.len() {
            let word = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap()) as usize;
            let (kept, len) = (word(8), word(12));
            let frame = &bytes[at + 16..at + 16 + kept];
            let from = match frame[0] >> 4 {
                4 => IpAddr::from(<[u8; 4]>::try_from(&frame[12..16]).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(&frame[8..24]).unwrap()),
            };
            if from == src {
                longest = longest.max(len);
                over += usize::from(len > MTU);
            }
            at += 16 + kept;
        }
        (longest, over)
    }
}

/// The tests' dual-stack lab, its TUN with offloads if `offload`, watched by a capture.
fn lab(offload: bool) -> (Lab, Capture) {
    ustack_testkit::init_test_logging();
    let capture = Capture::default();
    let writer = capture.clone();
    let net = LabNet { offload, ..LabNet::dual_stack() };
    let ns = NetNs::new().expect("creating a network namespace");
    let lab = Lab::start_in(ns, &net, StackConfig::default(), move |tun| {
        assert_eq!(tun.offload(), offload, "this kernel has TUN offloads");
        PcapRecorder::new(tun, writer).expect("a pcap header")
    })
    .expect("starting the lab");
    (lab, capture)
}

/// A kernel client sends `BYTES` to a ustack echo server at `server` and reads them back.
fn echo_through_ustack(lab: &Lab, server: &str) {
    let listener = TcpListener::bind(&lab.stack, addr(server, 7)).unwrap();
    let echo = std::thread::spawn(move || -> io::Result<()> {
        let (stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut buf = vec![0; 256 << 10];
        loop {
            let n = (&stream).read(&mut buf)?;
            if n == 0 {
                return stream.shutdown(Shutdown::Write);
            }
            (&stream).write_all(&buf[..n])?;
        }
    });
    let data = pattern(BYTES, 0x9e37_79b9);
    let sent = data.clone();
    let server: SocketAddr = addr(server, 7);
    let echoed = lab.ns.run(move || kernel_echo(server, sent, PATIENCE)).unwrap().expect("kernel client");
    echo.join().unwrap().expect("ustack echo server");
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echo is not byte-exact");
}

#[test]
fn ipv4_bulk_moves_super_segments_both_ways_intact() {
    ustack::require_tun!();
    let (lab, capture) = lab(true);
    echo_through_ustack(&lab, USTACK);
    let (longest_in, over_in) = capture.longest_from(KERNEL.parse().unwrap());
    let (longest_out, over_out) = capture.longest_from(USTACK.parse().unwrap());
    assert!(over_in > 0, "no received frame longer than the MTU (longest {longest_in})");
    assert!(over_out > 0, "no sent frame longer than the MTU (longest {longest_out})");
    assert!(longest_in <= 65535 && longest_out <= 65535, "{longest_in} {longest_out}");
}

#[test]
fn ipv6_bulk_receives_super_segments_intact() {
    ustack::require_tun!();
    let (lab, capture) = lab(true);
    echo_through_ustack(&lab, USTACK6);
    let (longest_in, over_in) = capture.longest_from(KERNEL6.parse().unwrap());
    let (longest_out, _) = capture.longest_from(USTACK6.parse().unwrap());
    assert!(over_in > 0, "no received frame longer than the MTU (longest {longest_in})");
    // smoltcp 0.14 drops an IPv6 packet longer than the MTU even with segmentation
    // offload, so the device offers it for IPv4 only (src/device/tun.rs, capabilities).
    assert!(longest_out <= MTU, "sent an IPv6 frame of {longest_out} bytes");
}

#[test]
fn without_offloads_every_frame_fits_the_mtu() {
    ustack::require_tun!();
    let (lab, capture) = lab(false);
    echo_through_ustack(&lab, USTACK);
    echo_through_ustack(&lab, USTACK6);
    for ip in [KERNEL, USTACK, KERNEL6, USTACK6] {
        let (longest, over) = capture.longest_from(ip.parse().unwrap());
        assert_eq!(over, 0, "{ip} sent frames up to {longest} bytes");
        assert!(longest > 1000, "{ip}: only {longest}-byte frames: was there bulk at all?");
    }
}

#[test]
fn a_tun_fd_handed_over_keeps_its_offload_setting() {
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    for offload in [true, false] {
        let config = TunConfig { name: "ustackfd0".into(), offload, ..TunConfig::default() };
        let device = ns.run(|| TunDevice::open(&config)).unwrap().unwrap();
        assert_eq!(device.offload(), offload);
        let (name, mtu) = (device.name().to_string(), device.mtu());
        let again = TunDevice::from_fd(device.into_fd(), &name, mtu).unwrap();
        assert_eq!(again.offload(), offload, "from_fd reads IFF_VNET_HDR back");
    }
}

#[test]
fn a_fault_injector_damaging_sent_frames_turns_sending_offloads_off() {
    use ustack::device::{FaultConfig, FaultInjector, Faults};
    use ustack::smoltcp::phy::Device;
    ustack::require_tun!();
    let ns = NetNs::new().unwrap();
    let config = TunConfig { name: "ustackfi0".into(), ..TunConfig::default() };
    let tun = ns.run(|| TunDevice::open(&config)).unwrap().unwrap();
    assert!(tun.offload());
    let caps = tun.capabilities();
    assert!(!caps.checksum.tcp.tx() && caps.segmentation.tcpv4.is_some(), "offloads on: {caps:?}");
    // Damage on the way out must meet a checksum computed before it, as on a wire; the
    // kernel would compute one over the damaged bytes.
    let injector = FaultInjector::new(tun, FaultConfig::tx_only(Faults::lossy(0.0, 1.0))).unwrap();
    let caps = injector.capabilities();
    assert!(caps.checksum.tcp.tx() && caps.checksum.udp.tx(), "{caps:?}");
    assert!(caps.segmentation.tcpv4.is_none(), "{caps:?}");
    assert!(injector.get_ref().offload(), "receiving keeps its offloads");
    // Losing frames alone changes nothing.
    let tun = injector.into_inner();
    let lossy = FaultInjector::new(tun, FaultConfig::both(Faults::lossy(5.0, 0.0))).unwrap();
    assert!(lossy.capabilities().checksum.tcp.tx(), "the TUN itself keeps what it was told");
}
