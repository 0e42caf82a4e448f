//! `ustack bench --smoke`: every scenario of the bench runs, with tiny sizes, and its rows
//! print, so the harness cannot rot. The figures themselves are never asserted: they
//! depend on the machine and on whatever else it is doing.

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ustack");

/// How long the smoke run may take before it counts as hung (it takes well under a minute).
const HANG: Duration = Duration::from_secs(120);

#[test]
fn smoke_run_prints_every_scenario_with_its_baselines() {
    ustack::require_tun!();
    // A scenario that hangs until its own timeouts fails the test instead of stalling it.
    let out = ustack_testkit::output_within(Command::new(BIN).args(["bench", "--smoke"]), HANG, "ustack bench --smoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    for row in [
        "| Bulk TCP kernel → ustack (ustack receives), MTU 1500 ",
        "| Bulk TCP ustack → kernel (ustack sends), MTU 1500 ",
        "| Bulk TCP kernel → ustack (ustack receives), MTU 65000 ",
        "| Bulk TCP ustack → kernel (ustack sends), MTU 65000 ",
        "| sender held back by the receive window ",
        "| Sequential connect + close, kernel client → listener ",
        "| connections/s ",
        "| connect() p50, µs ",
        "| connect() p99, µs ",
        "| Burst: 40 clients connect at once, backlog 128 ",
        "| accepted (of 40) ",
        "| clients that saw a RST ",
        "| SYNs + handshake ACKs dropped ",
        "| time until all accepted, ms ",
        "| UDP request/response, 64 B, kernel client → echo server ",
        "| round trips/s ",
        "| RTT p99, µs ",
        "| 10 established connections, kernel clients → listener ",
        "| 20 established connections, kernel clients → listener ",
        "| RSS growth per connection ",
        "| heap allocated per connection ",
        "| connect() succeeded, client's view ",
        "| echo RTT p99 meanwhile, µs ",
        "| Decode a capture of 1000 TCP packets ",
    ] {
        assert!(stdout.contains(row), "no row {row:?} in:\n{stdout}");
    }
    for baseline in
        ["kernel ↔ kernel, veth", "raw smoltcp, same TUN", "raw smoltcp + app copy", "tcpdump -nn -r", "tshark -r"]
    {
        assert!(stdout.contains(baseline), "no baseline {baseline:?} in:\n{stdout}");
    }
    // The connect rows have raw smoltcp's figures too, on the line after the kernel's.
    let lines: Vec<&str> = stdout.lines().collect();
    for metric in ["| connections/s ", "| connect() p50, µs ", "| connect() p99, µs "] {
        let at = lines.iter().position(|line| line.contains(metric));
        let raw = at.and_then(|at| lines.get(at + 1)).is_some_and(|line| line.contains("| raw smoltcp, same TUN "));
        assert!(raw, "no raw smoltcp baseline under {metric:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("failed:"), "a measurement failed:\n{stdout}");
}

#[test]
fn bad_usage_is_exit_2() {
    for args in [&["bench", "--scenario", "nonsense"][..], &["bench", "--quick", "--smoke"], &["bench", "--mtu", "100"]]
    {
        let out = Command::new(BIN).args(args).output().expect("run ustack bench");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{args:?}: one line on stderr");
    }
}
