//! The speed targets ustack aims at (issue 14), checked against a run's table: each is a
//! ratio (or a figure) of one row, printed under the table as "met", "not met" or "not
//! measured", so a run says by itself how far ustack is from each.

use std::fmt::Write as _;

use super::table::{Cell, Row, Table};
use super::{KERNEL, RAW};

/// What a target asks of a row.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// ustack ÷ the named baseline at least this (rates).
    AtLeast(&'static str, f64),
    /// ustack ÷ the named baseline at most this (times).
    AtMost(&'static str, f64),
    /// ustack's own figure at most this (counts, bytes).
    FigureAtMost(f64),
}

/// One target: the rows it applies to (scenario starting with `scenario`, ending with
/// `suffix`; metric starting with `metric`), and what it asks.
struct Target {
    what: &'static str,
    scenario: &'static str,
    suffix: &'static str,
    metric: &'static str,
    goal: Goal,
}

const TARGETS: &[Target] = &[
    Target {
        what: "bulk, MTU 1500, ustack receives ≥ 0.8× kernel over veth",
        scenario: "Bulk TCP kernel → ustack",
        suffix: "MTU 1500",
        metric: "Gbit/s",
        goal: Goal::AtLeast(KERNEL, 0.8),
    },
    Target {
        what: "bulk, MTU 1500, ustack sends ≥ 0.8× kernel over veth",
        scenario: "Bulk TCP ustack → kernel",
        suffix: "MTU 1500",
        metric: "Gbit/s",
        goal: Goal::AtLeast(KERNEL, 0.8),
    },
    Target {
        what: "bulk, MTU 65000, ustack receives ≥ 0.9× raw smoltcp",
        scenario: "Bulk TCP kernel → ustack",
        suffix: "MTU 65000",
        metric: "Gbit/s",
        goal: Goal::AtLeast(RAW, 0.9),
    },
    Target {
        what: "bulk, MTU 65000, ustack sends ≥ 0.9× raw smoltcp",
        scenario: "Bulk TCP ustack → kernel",
        suffix: "MTU 65000",
        metric: "Gbit/s",
        goal: Goal::AtLeast(RAW, 0.9),
    },
    Target {
        what: "UDP round trips ≥ 0.9× kernel",
        scenario: "UDP request/response",
        suffix: "",
        metric: "round trips/s",
        goal: Goal::AtLeast(KERNEL, 0.9),
    },
    Target {
        what: "sequential connects ≥ 1.0× kernel",
        scenario: "Sequential connect + close",
        suffix: "",
        metric: "connections/s",
        goal: Goal::AtLeast(KERNEL, 1.0),
    },
    Target {
        what: "1000-client burst in ≤ 2× the kernel's time",
        scenario: "Burst: 1000 clients",
        suffix: "",
        metric: "time until all accepted",
        goal: Goal::AtMost(KERNEL, 2.0),
    },
    Target {
        what: "1000-client burst with no drop",
        scenario: "Burst: 1000 clients",
        suffix: "",
        metric: "SYNs + handshake ACKs dropped",
        goal: Goal::FigureAtMost(0.0),
    },
    Target {
        what: "10k connections: RSS per connection ≤ 2.7 KiB",
        scenario: "10000 established connections",
        suffix: "",
        metric: "RSS growth per connection",
        goal: Goal::FigureAtMost(2.7 * 1024.0),
    },
    Target {
        what: "10k connections: heap per connection ≤ 1.8 KiB",
        scenario: "10000 established connections",
        suffix: "",
        metric: "heap allocated per connection",
        goal: Goal::FigureAtMost(1.8 * 1024.0),
    },
];

fn measured(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Measured(f) => Some(f.median),
        _ => None,
    }
}

/// The figure a target is judged by, and whether it is met; `None` if the run did not
/// measure it.
fn judge(goal: Goal, row: &Row) -> Option<(f64, bool)> {
    let ours = measured(&row.ustack)?;
    let baseline = |name: &str| row.baselines.iter().find(|(n, _)| n == name).and_then(|(_, c)| measured(c));
    match goal {
        Goal::AtLeast(name, min) => {
            let ratio = ours / baseline(name).filter(|b| *b > 0.0)?;
            Some((ratio, ratio >= min))
        }
        Goal::AtMost(name, max) => {
            let ratio = ours / baseline(name).filter(|b| *b > 0.0)?;
            Some((ratio, ratio <= max))
        }
        Goal::FigureAtMost(max) => Some((ours, ours <= max)),
    }
}

/// The targets as a Markdown table: what, the figure (a ratio, or ustack's own figure),
/// and whether it is met. Empty if the run measured none of them.
pub fn render(table: &Table) -> String {
    let mut lines = Vec::new();
    for target in TARGETS {
        let Some(row) = table.rows.iter().find(|r| {
            r.scenario.starts_with(target.scenario)
                && r.scenario.ends_with(target.suffix)
                && r.metric.starts_with(target.metric)
        }) else {
            continue;
        };
        let (figure, verdict) = match judge(target.goal, row) {
            Some((value, met)) => {
                let figure = match target.goal {
                    Goal::FigureAtMost(_) => super::table::format_value(value, row.unit),
                    _ => format!("{}×", super::table::significant(value)),
                };
                (figure, if met { "met" } else { "not met" })
            }
            None => ("—".to_string(), "not measured"),
        };
        lines.push(format!("| {} | {figure} | {verdict} |", target.what));
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nAgainst the speed targets:\n\n| target | this run | |\n|---|---|---|\n");
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Figure;
    use crate::table::Unit;

    fn row(scenario: &str, metric: &str, ours: f64, baselines: &[(&str, f64)]) -> Row {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            unit: if metric.contains("dropped") { Unit::Count } else { Unit::Gbps },
            ustack: Cell::Measured(Figure::once(ours)),
            baselines: baselines.iter().map(|(n, v)| (n.to_string(), Cell::Measured(Figure::once(*v)))).collect(),
        }
    }

    #[test]
    fn each_target_is_judged_by_its_own_row_and_baseline() {
        let table = Table {
            rows: vec![
                row(
                    "Bulk TCP kernel → ustack (ustack receives), MTU 1500",
                    "Gbit/s",
                    8.0,
                    &[(KERNEL, 10.0), (RAW, 4.0)],
                ),
                row("Bulk TCP ustack → kernel (ustack sends), MTU 1500", "Gbit/s", 7.0, &[(KERNEL, 10.0)]),
                row("Bulk TCP kernel → ustack (ustack receives), MTU 65000", "Gbit/s", 9.0, &[(RAW, 10.0)]),
                row(
                    "Burst: 1000 clients connect at once, backlog 128",
                    "time until all accepted, ms",
                    50.0,
                    &[(KERNEL, 24.0)],
                ),
                row(
                    "Burst: 1000 clients connect at once, backlog 128",
                    "SYNs + handshake ACKs dropped",
                    0.0,
                    &[(KERNEL, 0.0)],
                ),
            ],
            notes: Vec::new(),
        };
        let text = render(&table);
        assert!(text.contains("| bulk, MTU 1500, ustack receives ≥ 0.8× kernel over veth | 0.800× | met |"), "{text}");
        assert!(text.contains("| bulk, MTU 1500, ustack sends ≥ 0.8× kernel over veth | 0.700× | not met |"), "{text}");
        assert!(text.contains("| bulk, MTU 65000, ustack receives ≥ 0.9× raw smoltcp | 0.900× | met |"), "{text}");
        assert!(text.contains("| 1000-client burst in ≤ 2× the kernel's time | 2.08× | not met |"), "{text}");
        assert!(text.contains("| 1000-client burst with no drop | 0 | met |"), "{text}");
        assert!(!text.contains("UDP"), "a scenario not run is left out: {text}");
    }

    #[test]
    fn a_failed_measurement_is_not_measured_rather_than_met() {
        let mut failed = row("UDP request/response, 64 B, kernel client → echo server", "round trips/s", 1.0, &[]);
        failed.baselines.push((KERNEL.into(), Cell::Failed("no namespace".into())));
        let text = render(&Table { rows: vec![failed], notes: Vec::new() });
        assert!(text.contains("| UDP round trips ≥ 0.9× kernel | — | not measured |"), "{text}");
    }

    #[test]
    fn a_run_without_any_target_prints_nothing() {
        assert_eq!(render(&Table::default()), "");
    }
}
