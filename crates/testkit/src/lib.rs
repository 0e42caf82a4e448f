//! ustack's test kit: what the tests of every crate in the workspace share, and what the
//! bench, the demo and the replay build on.
//!
//! - [`pair`](mod@pair): two stacks joined by the in-memory wire (or one alone, the test playing
//!   the other end); [`sockets`]: socket helpers whose every wait is bounded.
//! - [`lab`]: a network namespace of its own with a TUN whose kernel side is the peer,
//!   and a stack on it (root only; nothing touches the host's namespace).
//! - [`inject`]: a peer played by hand, raw IP packets written onto a wire;
//!   [`spoof`]: raw packets with any source address, sent through a namespace's kernel.
//! - [`servers`]: echo and discard, on ustack's sockets or the kernel's.
//! - [`fixtures`]: the capture files in the repository's `fixtures/`.
//! - [`process`]: a child process a test drives while it runs, its output collected.
//! - [`browser`]: a headless Chromium showing a page as a person would see it (DOM, screenshot).
//!
//! Of the workspace's crates it depends on the library (`ustack`) alone; nothing in the
//! library depends on it.

pub mod browser;
pub mod fixtures;
pub mod inject;
pub mod lab;
pub mod pair;
pub mod process;
pub mod servers;
pub mod sockets;
pub mod spoof;

pub use fixtures::fixture;
pub use pair::{A, A6, B, B6, Lone, Pair, config, lone_a, lone_b, pair, pair_with};
pub use sockets::{
    WAIT, addr, connection, domain_of, err, eventually, kernel_echo, listener, pattern, recv_exact, sock, tcp, udp,
    wait_for,
};

/// Logs to the test harness's captured output (`RUST_LOG` chooses what), once per test
/// binary; later calls do nothing.
pub fn init_test_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Runs `command` to the end and gives its output, or panics saying `what` hung if it is
/// still running after `limit` (it is killed then). A test's bound on a program that must
/// not hang, without asserting how long it took.
pub fn output_within(
    command: &mut std::process::Command,
    limit: std::time::Duration,
    what: &str,
) -> std::process::Output {
    use std::process::Stdio;
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the program");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match finished.recv_timeout(limit) {
        Ok(out) => out.expect("wait for the program"),
        Err(_) => {
            // SAFETY: kill(2) on the child's own pid has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what} still running after {limit:?}: it hangs");
        }
    }
}
