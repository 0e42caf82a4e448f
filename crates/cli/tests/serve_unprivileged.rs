//! `ustack serve` run by an ordinary user, on a persistent TUN that root made for them
//! once, inside a network namespace the test creates (nothing is configured in the
//! host's namespace).

use ustack::sys::NetNs;

/// What root does once so a user can run ustack without privileges: a persistent TUN owned
/// by `uid` (`ip tuntap add dev NAME mode tun user USER`).
fn make_persistent_tun(name: &str, uid: libc::uid_t) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let tun = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    // SAFETY: all-zero is a valid ifreq; the name fits (checked by the caller's choice).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    let check = |r: libc::c_int| if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
    // SAFETY: TUN ioctls on an open /dev/net/tun with a valid ifreq and integer arguments.
    unsafe {
        check(libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr))?;
        check(libc::ioctl(tun.as_raw_fd(), libc::TUNSETOWNER, uid as libc::c_ulong))?;
        check(libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong))?;
    }
    Ok(())
}

#[test]
fn a_user_runs_serve_without_root_on_a_persistent_tun_root_made_for_them() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::process::CommandExt;
    ustack::require_tun!();
    const NOBODY: libc::uid_t = 65534;
    let ns = NetNs::new().unwrap();
    // Root, once: the device, owned by nobody, and its kernel side configured.
    ns.run(|| -> std::io::Result<()> {
        make_persistent_tun("ustackp0", NOBODY)?;
        let mut netlink = ustack::sys::netlink::Netlink::open()?;
        let link = netlink.link_by_name("ustackp0")?.expect("the persistent TUN exists");
        netlink.add_address(link.index, "10.7.0.1".parse().unwrap(), 24)?;
        netlink.set_up(link.index)
    })
    .unwrap()
    .unwrap();

    // The user: serve as nobody, in the namespace. Distributions ship /dev/net/tun as 0666
    // (the kernel checks the TUN's owner, not the file); where this machine's node is 0600,
    // the child gets a private mount namespace with a 0666 node of the same device over it.
    let ns_fd = ns.as_fd().as_raw_fd();
    let node_dir = std::env::temp_dir().join(format!("ustack-tun-node-{}", std::process::id()));
    std::fs::create_dir_all(&node_dir).unwrap();
    let node = std::ffi::CString::new(node_dir.join("tun").to_str().unwrap()).unwrap();
    let _ = std::fs::remove_file(node_dir.join("tun"));
    // SAFETY: mknod with a valid path; /dev/net/tun is character device 10:200.
    assert_eq!(unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(10, 200)) }, 0);
    // SAFETY: chmod with a valid path (mknod's mode is masked by the umask).
    assert_eq!(unsafe { libc::chmod(node.as_ptr(), 0o666) }, 0);

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ustack"));
    command
        .args(["serve", "--tun", "ustackp0", "--addr", "10.7.0.2/24", "--peer-addr", "10.7.0.1/24", "--tcp", "7"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let fail = |r: libc::c_int| if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
            fail(libc::setns(ns_fd, libc::CLONE_NEWNET))?;
            fail(libc::unshare(libc::CLONE_NEWNS))?;
            let null = std::ptr::null();
            fail(libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, null.cast()))?;
            fail(libc::mount(node.as_ptr(), c"/dev/net/tun".as_ptr(), null, libc::MS_BIND, null.cast()))?;
            fail(libc::setgroups(0, std::ptr::null()))?;
            fail(libc::setgid(NOBODY))?;
            fail(libc::setuid(NOBODY))
        });
    }
    let mut serve = command.spawn().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = serve.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    // "] serving " is the line logged once every listener listens; the fallback's own line
    // comes before the stack exists, and a connect then would be refused or lost.
    while !seen.last().is_some_and(|l: &String| l.contains("] serving ")) {
        match lines.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = serve.kill();
                panic!("serve did not start as nobody: {seen:#?} (exit: {:?})", serve.wait());
            }
        }
    }
    // The TUN was made without multi_queue: serve falls back to one shard, with offloads,
    // and does not claim it has none.
    let one_shard = seen.iter().any(|l| l.contains("falling back to one shard"));
    if !one_shard || seen.iter().any(|l| l.contains("no offloads")) {
        let _ = serve.kill();
        panic!("serve should fall back to one shard and keep its offloads: {seen:#?}");
    }
    let echoed = ns
        .run(|| -> std::io::Result<Vec<u8>> {
            let mut stream = std::net::TcpStream::connect_timeout(
                &"10.7.0.2:7".parse().unwrap(),
                std::time::Duration::from_secs(5),
            )?;
            stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            stream.write_all(b"no root needed")?;
            stream.shutdown(std::net::Shutdown::Write)?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply)?;
            Ok(reply)
        })
        .unwrap();
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(serve.id() as libc::pid_t, libc::SIGTERM) };
    let status = serve.wait().unwrap();
    let _ = std::fs::remove_dir_all(&node_dir);
    assert_eq!(echoed.unwrap(), b"no root needed");
    assert!(status.success(), "serve exits 0 on SIGTERM: {status:?}");
}
