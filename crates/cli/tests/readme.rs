//! The README's shell blocks, run as written, so that they cannot rot: every ```` ```sh ````
//! block of README.md runs with `bash -euo pipefail`, as root, and the test checks what a
//! reader would look for on the screen (`hello` echoed, an HTTP status line, ECONNREFUSED,
//! the demux table, the ladder diagrams).
//!
//! Each block runs in a temporary directory that looks like the workspace to it:
//! `./target/release/ustack` (and `ustack` on PATH) is the binary under test, and `cargo` is
//! a stand-in that accepts the README's `cargo build --release` and builds nothing.
//!
//! Isolation. A block runs under `unshare --mount --net --pid --fork --kill-child
//! --mount-proc`, in a wrapper that first mounts a tmpfs on /run (the blocks need nothing
//! of the host's /run):
//! - The block's `ip netns add lab` creates `lab` in that private /run/netns, so the
//!   README's names are run unchanged, blocks running in parallel do not collide with each
//!   other or with a `lab` of the reader's own, and a namespace a failed block did not
//!   delete goes away with the mount namespace. (Rewriting `lab` to a unique name would
//!   test other text than the README's, and leave the namespace in the host's /run/netns
//!   whenever a block is killed half-way.)
//! - Whatever a block runs outside `ip netns exec` is in a fresh network namespace with
//!   only loopback: it cannot reach, or configure, the host's network.
//! - The block's processes are in a PID namespace whose init is the wrapper. When the
//!   block ends, the wrapper fails it if anything it started is still running (after a
//!   grace period: a process just sent SIGTERM may take a moment), or a namespace is left
//!   in /run/netns, or a link besides `lo` in its own namespace. When the wrapper exits,
//!   or is killed on [`TIMEOUT`], the kernel kills whatever is left in the PID namespace,
//!   so nothing outlives the test either way.
//!
//! Needs root, a TUN device, and the tools the blocks use; skips (saying why) without them,
//! and fails under `CI=true` (`.ci/run` installs the tools where apt-get exists).

use std::env;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ustack");
const README: &str = include_str!("../../../README.md");
/// The longest a block may run. The slowest, the backlog demonstration, takes about 10 s.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the block (`$1`) in the namespaces `unshare` made, then checks that it cleaned up.
/// It is PID 1 of the block's PID namespace; its exit kills whatever is left there.
const WRAPPER: &str = r#"
set -u
# A /run of the block's own, where `ip netns add` makes its namespaces: only this mount
# namespace sees the tmpfs (unshare makes mounts private), and nothing is created in the
# host's /run, not even an empty /run/netns.
mount -t tmpfs readme-run /run && mkdir /run/netns || exit 90
ip link set lo up || exit 90

status=0
bash -euo pipefail "$1" </dev/null || status=$?
[ "$status" = 0 ] || echo "readme-test: the block exited with status $status"

# What the block left: processes other than this one (zombies count as gone) ...
for _ in $(seq 50); do
    left=()
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$pid" = 1 ] && continue
        read -r stat 2>/dev/null <"$proc/stat" || continue
        stat=${stat##*) }
        [ "${stat%% *}" = Z ] || left+=("$pid")
    done
    [ ${#left[@]} = 0 ] && break
    sleep 0.1
done
for pid in "${left[@]}"; do
    echo "readme-test: left running: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")"
    status=99
done
# ... network namespaces ...
for ns in /run/netns/*; do
    [ -e "$ns" ] || continue
    echo "readme-test: left namespace ${ns##*/}"
    status=99
done
# ... and links in the namespace standing for the reader's own.
for link in $(ip -br link show | awk '$1 != "lo" { print $1 }'); do
    echo "readme-test: left link $link outside any netns the block made"
    status=99
done
exit "$status"
"#;

/// `cargo` for the blocks: the binary under test is already built.
const CARGO_SHIM: &str = r#"#!/bin/sh
# The README test's stand-in for cargo: the binary under test is already built.
[ "$*" = "build --release" ] && exit 0
echo "cargo (README test stand-in): will not run 'cargo $*'" >&2
exit 1
"#;

/// The ```` ```sh ```` blocks of `markdown`: the line each starts on (1-based) and its text.
fn sh_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    let mut fenced = false;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_end();
        match open.as_mut() {
            Some(_) if fence == "```" => blocks.extend(open.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            // Other fenced blocks (```rust, ```text, ...) are skipped whole.
            None if fence.starts_with("```") => {
                if fenced {
                    fenced = false;
                } else if fence == "```sh" {
                    open = Some((i + 1, String::new()));
                } else {
                    fenced = true;
                }
            }
            None => {}
        }
    }
    assert!(open.is_none() && !fenced, "README.md: a code block is not closed");
    blocks
}

/// Whether the blocks can run here; if not, says why and skips, or under `CI=true` fails.
fn can_run(tools: &[&str]) -> bool {
    let reason = match ustack::device::tun_support() {
        Err(reason) => Some(reason),
        Ok(()) => {
            let missing: Vec<String> = ["bash", "unshare", "ip"]
                .iter()
                .chain(tools)
                .filter(|tool| !on_path(tool))
                .map(|tool| format!("{tool} (Debian: {})", package(tool)))
                .collect();
            (!missing.is_empty()).then(|| format!("the README's blocks need {}", missing.join(", ")))
        }
    };
    let Some(reason) = reason else { return true };
    if env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but the README's blocks cannot run: {reason}");
    }
    eprintln!("skipping: {reason}");
    false
}

fn on_path(tool: &str) -> bool {
    search_path().iter().any(|dir| fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file()))
}

/// Where the blocks find their tools: this process's PATH, and sbin, where `ip` and
/// `tcpdump` live on some systems and which not every PATH has.
fn search_path() -> Vec<PathBuf> {
    let mut path: Vec<PathBuf> = env::split_paths(&env::var_os("PATH").unwrap_or_default()).collect();
    path.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    path
}

fn package(tool: &str) -> &str {
    match tool {
        "nc" => "netcat-openbsd",
        "ping" => "iputils-ping",
        "ip" | "ss" => "iproute2",
        "unshare" => "util-linux",
        other => other,
    }
}

/// Runs README block `number` (1-based, in the order of the file) as described in the
/// module's documentation; gives what it printed, standard output and error interleaved as
/// a terminal shows them. Panics if the block fails, times out, or leaves anything behind.
fn run_block(number: usize) -> String {
    let blocks = sh_blocks(README);
    let (line, text) = &blocks[number - 1];
    let what = format!("README.md block {number} (line {line})");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("readme-{}-{number}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let bin = dir.join("bin");
    fs::create_dir_all(dir.join("target/release")).unwrap();
    fs::create_dir_all(&bin).unwrap();
    symlink(BIN, dir.join("target/release/ustack")).unwrap();
    symlink(BIN, bin.join("ustack")).unwrap();
    write_executable(&bin.join("cargo"), CARGO_SHIM);
    fs::write(dir.join("block.sh"), text).unwrap();
    fs::write(dir.join("wrapper.sh"), WRAPPER).unwrap();

    let output_path = dir.join("output");
    let output = File::create(&output_path).unwrap();
    let mut path = search_path();
    path.insert(0, bin);
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "bash", "wrapper.sh", "block.sh"])
        .current_dir(&dir)
        .env("PATH", env::join_paths(path).unwrap())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output);
    // SAFETY: prctl is async-signal-safe. If the test process dies, unshare gets SIGKILL,
    // and through --kill-child so does the block's PID namespace.
    unsafe {
        command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        });
    }
    let mut child = command.spawn().expect("running unshare");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // unshare's death kills the wrapper (--kill-child), and the wrapper's every
            // process in its PID namespace.
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let printed = fs::read_to_string(&output_path).unwrap_or_default();
    fs::remove_dir_all(&dir).unwrap();
    match status {
        None => panic!("{what} did not finish within {TIMEOUT:?}; it printed:\n{printed}\n--- the block:\n{text}"),
        Some(status) if !status.success() => {
            panic!("{what} failed ({status}); it printed:\n{printed}\n--- the block:\n{text}")
        }
        Some(_) => printed,
    }
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Panics unless `printed` (block `number`'s output) contains each of `expected`.
#[track_caller]
fn expect(number: usize, printed: &str, expected: &[&str]) {
    for text in expected {
        assert!(printed.contains(text), "README.md block {number} did not print {text:?}; it printed:\n{printed}");
    }
}

#[test]
fn the_readme_has_the_blocks_this_test_checks() {
    // A new block needs a test below, with what its reader should see.
    assert_eq!(sh_blocks(README).len(), 4, "README.md's sh blocks: {:#?}", sh_blocks(README));
}

#[test]
fn block_1_serve_echoes_to_kernel_clients() {
    if !can_run(&["nc", "python3", "ping"]) {
        return;
    }
    let printed = run_block(1);
    expect(
        1,
        &printed,
        &[
            "hello\n",
            "b'hi'\n",
            "1 packets transmitted, 1 received",
            // serve's log, printed at the end.
            "serving echo on tcp 7, udp 7 at 10.7.0.2",
            "handshake complete, RTT",
            "closed, 6 bytes echoed",
            "SIGTERM: closing every connection",
        ],
    );
}

#[test]
fn block_2_connect_to_kernel_servers() {
    if !can_run(&["python3", "ss"]) {
        return;
    }
    let printed = run_block(2);
    expect(2, &printed, &["HTTP/1.0 200 OK", "ustack: connect 10.7.0.1:9: ECONNREFUSED (Connection refused)\n"]);
}

#[test]
fn block_3_seeing_inside() {
    if !can_run(&["curl", "python3", "tcpdump"]) {
        return;
    }
    let printed = run_block(3);
    expect(
        3,
        &printed,
        &[
            // --show-demux, then the page and its JSON.
            "demux table at",
            "tcp    [::]:8080",
            "Your connection, by its 5-tuple",
            "Handshake RTT:",
            "\"handshake_rtt_ms\":",
            // The backlog's log, and the capture read back.
            "queue full",
            "still in the accept queue",
            "ms since SYN",
            // The report of the same capture: a diagram per client.
            "report.html: 5 TCP connections and 0 UDP flows drawn",
        ],
    );
    let echoes = printed.lines().filter(|line| *line == r"b'hi\n'").count();
    assert_eq!(echoes, 5, "five clients, five echoes:\n{printed}");
    // `grep -c` of the SYNs: at least one per client.
    let syns = printed.lines().find_map(|line| line.parse::<u32>().ok());
    assert!(syns.is_some_and(|n| n >= 5), "SYN count {syns:?}:\n{printed}");
}

#[test]
fn block_4_unmodified_programs_on_ustack() {
    if !can_run(&["nc", "curl", "python3", "ss"]) {
        return;
    }
    let printed = run_block(4);
    expect(
        4,
        &printed,
        &[
            // curl on ustack: the kernel's page.
            "<!DOCTYPE HTML",
            // The Python server on ustack, asked by the kernel's curl.
            "HTTP/1.0 200 OK",
            // nc -l under --trace: the kernel client's SYN, the handshake log, and its line.
            "> 10.7.0.2.7: Flags [S]",
            "SYN-RECEIVED -> ESTABLISHED",
            "hello\n",
        ],
    );
}
