//! `ustack run --show-demux`: the demux table of the program's stack on standard error, at
//! start and whenever its rows change, as `ustack serve --show-demux` prints it (there on
//! standard output, which here is the program's own).

use std::io::Write as _;
use std::time::Duration;

use ustack::Stack;
use ustack::device::trace::wall_clock;

/// A burst of changes (a handshake changes the table three times in a millisecond) is
/// printed once, after this long.
const COALESCE: Duration = Duration::from_millis(100);

/// How often the table is looked at when nothing signalled a change.
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Starts the printing thread.
pub fn watch(stack: &'static Stack) {
    let spawned = std::thread::Builder::new().name("ustack-demux".into()).spawn(move || {
        let mut seen = stack.generation();
        let mut printed = None;
        loop {
            let table = stack.demux_table();
            if printed.as_ref() != Some(&table.rows) {
                let why = if printed.is_none() { "start" } else { "changed" };
                let block = format!("demux table at {} ({why}):\n{table}\n\n", time_of_day());
                let _ = std::io::stderr().lock().write_all(block.as_bytes());
                printed = Some(table.rows);
                std::thread::sleep(COALESCE);
            }
            seen = stack.wait_for_change(seen, IDLE_LOOK);
            if stack.error().is_some() {
                return;
            }
        }
    });
    if let Err(e) = spawned {
        let _ = writeln!(std::io::stderr(), "ustack: no thread for --show-demux: {e}");
    }
}

/// `12:34:56.789`, UTC, as the trace lines show the time.
fn time_of_day() -> String {
    let now = wall_clock();
    let secs = now.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, now.subsec_millis())
}
