//! Anonymous network namespaces, so that tests, the demo and tools never touch the host's
//! interfaces.
//!
//! A namespace made here has no name (nothing under `/run/netns`): it lives as long as its
//! file descriptor, a thread inside it, or a socket or TUN opened inside it, so a
//! panicking test cannot leak it, and its interfaces and addresses vanish with it. (The
//! kernel frees it just after the last holder goes: a joined thread may still be
//! finishing its exit for a moment.)
//!
//! Network namespaces belong to threads, not processes. A TUN opened by a thread inside a
//! namespace stays in that namespace, but its file descriptor works from any thread: open
//! the device with [`NetNs::run`], then drive it from anywhere.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, mpsc};
use std::thread;

use nix::sched::{CloneFlags, setns, unshare};

use super::netlink::Netlink;

/// A fresh, anonymous network namespace, alive while this value (or a thread inside it) lives.
///
/// It starts with only `lo`, which is brought up.
#[derive(Clone)]
pub struct NetNs {
    fd: Arc<OwnedFd>,
}

impl NetNs {
    /// Creates the namespace on a short-lived thread (so the caller's own namespace is
    /// untouched): `unshare(CLONE_NEWNET)`, bring `lo` up, keep `/proc/thread-self/ns/net`
    /// open. Needs `CAP_SYS_ADMIN` (root).
    pub fn new() -> io::Result<NetNs> {
        let creator = thread::Builder::new().name("netns-new".into()).spawn(|| -> io::Result<OwnedFd> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("creating a network namespace (unshare CLONE_NEWNET): {e} (needs root or CAP_SYS_ADMIN)"),
                )
            })?;
            let ns = File::open("/proc/thread-self/ns/net")
                .map_err(|e| io::Error::new(e.kind(), format!("opening /proc/thread-self/ns/net: {e}")))?;
            let mut netlink = Netlink::open()?;
            let lo = netlink
                .link_by_name("lo")?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "new network namespace has no lo"))?;
            netlink.set_up(lo.index)?;
            Ok(ns.into())
        })?;
        let fd = creator.join().map_err(|_| io::Error::other("network namespace thread panicked"))??;
        Ok(NetNs { fd: Arc::new(fd) })
    }

    /// Moves the calling thread into the namespace (`setns`). There is no way back unless
    /// the caller kept its old namespace; prefer [`NetNs::run`] or [`NetNs::spawn`].
    pub fn enter(&self) -> io::Result<()> {
        setns(&*self.fd, CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("entering network namespace (setns): {e}")))
    }

    /// Runs `f` on a new thread inside the namespace and returns its result. A panic in
    /// `f` is propagated to the caller.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> io::Result<T> {
        thread::scope(|scope| {
            let worker = thread::Builder::new().name("netns-run".into()).spawn_scoped(scope, || {
                self.enter()?;
                Ok(f())
            })?;
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Spawns a thread inside the namespace, for long-running work such as kernel-side
    /// servers and clients in tests. Returns once the thread is inside the namespace.
    pub fn spawn<T, F>(&self, f: F) -> io::Result<thread::JoinHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let ns = self.clone();
        let (entered_tx, entered_rx) = mpsc::sync_channel(1);
        let handle = thread::Builder::new().name("netns".into()).spawn(move || {
            let entered = ns.enter();
            let failed = entered.is_err();
            let _ = entered_tx.send(entered);
            drop(ns);
            if failed {
                // There is no `T` to return. Unwind without invoking the panic hook (no
                // message); the caller joins this thread and reports the error instead.
                std::panic::resume_unwind(Box::new("setns failed"));
            }
            f()
        })?;
        let entered =
            entered_rx.recv().unwrap_or_else(|_| Err(io::Error::other("network namespace thread exited early")));
        match entered {
            Ok(()) => Ok(handle),
            Err(e) => {
                let _ = handle.join();
                Err(e)
            }
        }
    }
}

/// The namespace's file descriptor, for `setns` in a child process between fork and exec.
impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl std::fmt::Debug for NetNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::fd::AsRawFd;
        f.debug_struct("NetNs").field("fd", &self.fd.as_raw_fd()).finish()
    }
}
