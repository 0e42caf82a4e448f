//! What the bench needs from the OS that std does not offer: a non-blocking connect()
//! (a thousand clients at once, without a thousand threads), listen() with a chosen
//! backlog, an accept() timeout and an abortive close on kernel sockets, the open-files
//! limit, and numbers from `/proc`.
//!
//! These are a handful of libc calls, already a dependency; socket2 or nix's socket
//! feature would wrap the same calls but add a crate (or memoffset) to the build for
//! about sixty lines here.

use std::fs;
use std::io;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use ustack::sys::NetNs;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Starts a connect() to `addr` on a new non-blocking kernel socket (in the calling
/// thread's namespace) and returns the socket at once, the handshake under way. It is
/// writable once the handshake ends; [`TcpStream::take_error`] then tells how.
pub fn start_connect(addr: SocketAddrV4) -> io::Result<TcpStream> {
    start_connect_with(addr, |_| Ok(()))
}

/// [`start_connect`], with `configure` run on the socket before its connect().
pub fn start_connect_with(
    addr: SocketAddrV4,
    configure: impl FnOnce(&OwnedFd) -> io::Result<()>,
) -> io::Result<TcpStream> {
    // SAFETY: socket() takes no pointers.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a successful socket() returns a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    configure(&fd)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in and the length passed is its size.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(TcpStream::from(fd))
}

fn set_option<T>(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T and the length passed is its size.
    check(unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), size_of::<T>() as libc::socklen_t)
    })
    .map(drop)
}

/// The congestion control new kernel sockets get on this machine (the initial namespace's,
/// which new namespaces inherit), or "unknown".
pub fn default_congestion() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Sets a kernel socket's congestion control (`TCP_CONGESTION`) to `name`, whatever this
/// machine's default (`net.ipv4.tcp_congestion_control`) is; a listener's accepted
/// connections inherit it.
pub fn set_congestion<const N: usize>(fd: &impl AsRawFd, name: &[u8; N]) -> io::Result<()> {
    set_option(fd, libc::IPPROTO_TCP, libc::TCP_CONGESTION, name)
}

/// Makes close() of `stream` abortive (SO_LINGER 0: a RST, no FIN_WAIT or TIME_WAIT), so
/// ten thousand closing connections leave nothing behind to slow the next scenario.
pub fn set_abortive_close(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    set_option(stream, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

/// Sets a kernel listener's accept queue to `backlog` (std listens with its own choice;
/// a second listen() on a listening socket changes the backlog, as in ustack).
pub fn set_backlog(listener: &TcpListener, backlog: u32) -> io::Result<()> {
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: listen() takes no pointers.
    check(unsafe { libc::listen(listener.as_raw_fd(), backlog) }).map(drop)
}

/// Makes a blocking accept() on `listener` give up with `EAGAIN` after `timeout`
/// (SO_RCVTIMEO, which Linux's accept() honours), so an acceptor can notice it should stop.
pub fn set_accept_timeout(listener: &TcpListener, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    set_option(listener, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// Raises the soft limit on open files to at least `want` (and the hard limit too if
/// needed, which root may do). Returns the soft limit in force afterwards.
pub fn raise_open_files(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit to fill in.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max.max(want) };
    // SAFETY: `raised` is a valid rlimit.
    if check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }).is_err() {
        // Without CAP_SYS_RESOURCE: as far as the hard limit allows.
        let capped = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: as above.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) })?;
        return Ok(lim.rlim_max);
    }
    Ok(want)
}

/// The process's resident memory (VmRSS), in bytes. It counts user memory only: ustack's
/// sockets and buffers, not the kernel's sockets (which live in kernel memory).
pub fn rss_bytes() -> io::Result<u64> {
    kib_field(&fs::read_to_string("/proc/self/status")?, "VmRSS:")
}

/// The kernel's slab memory (`Slab:` in /proc/meminfo), in bytes: where kernel sockets
/// live. Machine-wide, so anything else running moves it too.
pub fn slab_bytes() -> io::Result<u64> {
    kib_field(&fs::read_to_string("/proc/meminfo")?, "Slab:")
}

fn kib_field(text: &str, key: &str) -> io::Result<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {key} line")))
}

/// Bytes the allocator has handed out and not had back (glibc's mallinfo2: in-use heap
/// chunks plus mmapped blocks), whether or not their pages are resident. `None` where
/// that cannot be asked.
pub fn heap_bytes() -> Option<u64> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(target_env = "gnu"))]
    None
}

/// Gives free heap memory back to the OS (glibc's malloc_trim), so that RSS measured next
/// is a baseline that new allocations grow from, not one they hide in.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets the ephemeral port range of namespace `ns` (a per-namespace sysctl; /proc/sys/net
/// shows the namespace of the thread that opens it).
pub fn set_port_range(ns: &NetNs, low: u16, high: u16) -> io::Result<()> {
    ns.run(|| fs::write("/proc/sys/net/ipv4/ip_local_port_range", format!("{low} {high}")))?
        .map_err(|e| io::Error::new(e.kind(), format!("setting ip_local_port_range: {e}")))
}

/// A `TcpExt` counter of namespace `ns` (e.g. `ListenDrops`), from its /proc/net/netstat.
pub fn tcp_ext_counter(ns: &NetNs, name: &str) -> io::Result<u64> {
    // /proc/net follows the process's leader thread; thread-self follows the caller.
    let text = ns.run(|| fs::read_to_string("/proc/thread-self/net/netstat"))??;
    netstat_field(&text, "TcpExt:", name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no TcpExt {name} in /proc/net/netstat")))
}

/// Packets interface `iface` of namespace `ns` dropped on the way out (its transmit queue
/// was full): for a TUN, packets the kernel had for the stack and did not keep.
pub fn tx_dropped(ns: &NetNs, iface: &str) -> io::Result<u64> {
    let text = ns.run(|| fs::read_to_string("/proc/thread-self/net/dev"))??;
    // "name: rx bytes, packets, errs, drop, fifo, frame, compressed, multicast, tx bytes, packets, errs, drop, ..."
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(iface)?.strip_prefix(':'))
        .and_then(|fields| fields.split_whitespace().nth(11)?.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {iface} in /proc/net/dev")))
}

/// TCP sockets of namespace `ns` that are connected or on their way to closing: any
/// state but LISTEN, TIME_WAIT and CLOSE.
pub fn tcp_sockets_not_done(ns: &NetNs) -> io::Result<usize> {
    let tables = ns.run(|| -> io::Result<[String; 2]> {
        Ok([fs::read_to_string("/proc/thread-self/net/tcp")?, fs::read_to_string("/proc/thread-self/net/tcp6")?])
    })??;
    Ok(tables.iter().map(|t| not_done(t)).sum())
}

/// The sockets of a /proc/net/tcp table (a header line, then one line per socket whose
/// fourth column, `st`, is the kernel's `TCP_*` state in hex) in any state but TIME_WAIT
/// (06), CLOSE (07) and LISTEN (0A).
fn not_done(table: &str) -> usize {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|st| !["06", "07", "0A"].contains(st))
        .count()
}

/// A counter from /proc/net/netstat's format: a line of names, then a line of values, both
/// starting with `prefix`.
fn netstat_field(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names.zip(values).find(|(n, _)| *n == name).and_then(|(_, v)| v.parse().ok())
}

/// The figures the bench reads from a kernel TCP socket's `struct tcp_info`
/// (include/uapi/linux/tcp.h).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TcpInfo {
    /// Time the socket had data outstanding (`tcpi_busy_time`, Linux 4.10+).
    pub busy: Duration,
    /// Of that, time it could not send because the receiver's window was full
    /// (`tcpi_rwnd_limited`).
    pub rwnd_limited: Duration,
    /// Bytes it resent (`tcpi_bytes_retrans`, Linux 4.19+).
    pub bytes_retrans: u64,
}

impl TcpInfo {
    // Offsets in struct tcp_info: 8 bytes of u8 fields, 24 u32s (to 104), 4 u64s (to 136),
    // 6 u32s (to 160), tcpi_delivery_rate (160), tcpi_busy_time (168), tcpi_rwnd_limited
    // (176), tcpi_sndbuf_limited (184), 2 u32s (to 200), tcpi_bytes_sent (200),
    // tcpi_bytes_retrans (208).
    const BUSY: usize = 168;
    const RWND_LIMITED: usize = 176;
    const BYTES_RETRANS: usize = 208;

    /// `socket`'s; a field the kernel does not fill in (an older kernel) reads as zero,
    /// and so does everything if the call fails.
    pub fn of(socket: &impl AsRawFd) -> TcpInfo {
        let mut info = [0u8; 256];
        let mut len = info.len() as libc::socklen_t;
        // SAFETY: the buffer and its length are valid for the call; the kernel writes at most `len` bytes.
        let rc = unsafe {
            libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len)
        };
        let filled = if rc == 0 { (len as usize).min(info.len()) } else { 0 };
        let u64_at = |offset: usize| {
            info[..filled].get(offset..offset + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_ne_bytes)
        };
        TcpInfo {
            busy: Duration::from_micros(u64_at(Self::BUSY)),
            rwnd_limited: Duration::from_micros(u64_at(Self::RWND_LIMITED)),
            bytes_retrans: u64_at(Self::BYTES_RETRANS),
        }
    }

    /// The share of the busy time the receiver's window held the socket back, 0 to 1;
    /// None if the kernel measured no busy time.
    pub fn window_limited(&self) -> Option<f64> {
        (!self.busy.is_zero()).then(|| self.rwnd_limited.as_secs_f64() / self.busy.as_secs_f64())
    }
}

/// One line about the machine: CPU model, how many CPUs, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = fs::read_to_string("/proc/meminfo").ok().and_then(|m| kib_field(&m, "MemTotal:").ok()).unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cpus} CPUs, {:.1} GiB RAM, Linux {}", mem as f64 / (1u64 << 30) as f64, kernel.trim())
}

/// CPU time (user + system) of this whole process (`libc::RUSAGE_SELF`, every thread) or of
/// its waited-for children (`libc::RUSAGE_CHILDREN`); zero if it cannot be read.
pub fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: all-zero is a valid rusage, for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `who` is one of getrusage's.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields() {
        let netstat = "TcpExt: SyncookiesSent ListenDrops\nTcpExt: 3 17\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(netstat_field(netstat, "TcpExt:", "ListenDrops"), Some(17));
        assert_eq!(netstat_field(netstat, "TcpExt:", "Nope"), None);
        assert_eq!(kib_field("Name: x\nVmRSS:\t  2048 kB\n", "VmRSS:").unwrap(), 2 * 1024 * 1024);
        assert!(rss_bytes().unwrap() > 0);
    }

    #[test]
    fn sockets_not_done_leave_out_listeners_and_time_wait() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100000A:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 0 0
   1: 0100000A:9C40 0200000A:1B58 06 00000000:00000000 03:00000F9D 00000000     0        0 0 3 0 0 0
   2: 0100000A:9C41 0200000A:1B58 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 0 0
   3: 0100000A:9C42 0200000A:1B58 09 00000000:00000000 01:00000014 00000000     0        0 3 1 0 0 0
";
        // ESTABLISHED (01) and LAST_ACK (09): the TIME_WAIT and the listener are done.
        assert_eq!(not_done(table), 2);
        assert_eq!(not_done(table.lines().next().unwrap()), 0);
    }

    #[test]
    fn tcp_info_of_a_kernel_connection_that_moved_data() {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[7; 100_000]).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 100_000);
        let info = TcpInfo::of(&client);
        assert_eq!(info.bytes_retrans, 0, "{info:?}");
        assert!(info.rwnd_limited <= info.busy, "{info:?}");
        if let Some(share) = info.window_limited() {
            assert!((0.0..=1.0).contains(&share), "{info:?}");
        }
        let nothing = TcpInfo::of(&std::fs::File::open("/proc/self/stat").unwrap());
        assert_eq!(nothing, TcpInfo::default(), "not a socket: all zero");
    }

    #[test]
    fn tcp_info_says_when_a_receiver_that_does_not_read_holds_the_sender_back() {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Accepted sockets take the listener's buffer, and so a small window.
        set_option(&listener, libc::SOL_SOCKET, libc::SO_RCVBUF, &(4096 as libc::c_int)).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        // Until the window and the send buffer are full: from then on the sender waits on
        // the window for as long as the server does not read.
        let mut sent = 0;
        while sent < 64 << 20 {
            match client.write(&[7; 65536]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let held = Duration::from_millis(50);
        std::thread::sleep(held);
        let info = TcpInfo::of(&client);
        assert!(info.rwnd_limited >= held / 2, "{info:?}");
        assert!(info.window_limited().is_some_and(|share| share > 0.5 && share <= 1.0), "{info:?}");
    }
}
