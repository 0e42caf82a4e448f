//! The one table the bench prints: every ustack figure on a row, each baseline measured in
//! the same run on a line of its own below it, with the ratio ustack ÷ baseline.
//!
//! It is printed as a Markdown table, aligned so it reads in a terminal too, so the output
//! of a run can be pasted into BENCHMARKS.md unchanged.

use std::fmt::Write as _;

use super::stats::Figure;

/// How a metric's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Gigabits per second, two decimals.
    Gbps,
    /// Events per second, with a k or M suffix.
    PerSec,
    /// Microseconds, three significant digits.
    Micros,
    /// Milliseconds.
    Millis,
    /// Bytes, as B, KiB or MiB.
    Bytes,
    /// A count of things (connections, packets).
    Count,
    /// A share, in per cent. Two shares make no ratio worth printing.
    Percent,
}

/// One measured (or not) figure.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// The median of the repeats.
    Measured(Figure),
    /// Not measured, on purpose (a baseline tool that is not installed); the reason.
    Skipped(String),
    /// The measurement failed; the error.
    Failed(String),
    /// An outcome that is not a number, e.g. "not all within 10 s".
    Text(String),
}

impl Cell {
    /// A figure measured once.
    pub fn once(value: f64) -> Cell {
        Cell::Measured(Figure::once(value))
    }

    fn value(&self) -> Option<f64> {
        match self {
            Cell::Measured(f) => Some(f.median),
            _ => None,
        }
    }
}

/// A row: what was measured, ustack's figure, and its baselines.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The scenario, e.g. "Bulk TCP kernel → ustack, MTU 1500".
    pub scenario: String,
    /// The metric, with its unit, e.g. "Gbit/s".
    pub metric: String,
    pub unit: Unit,
    pub ustack: Cell,
    /// Each baseline's name and figure.
    pub baselines: Vec<(String, Cell)>,
}

/// The table: rows in the order they were measured, and notes printed under it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub rows: Vec<Row>,
    /// Remarks about conditions and individual figures, printed under the table.
    pub notes: Vec<String>,
}

/// Repeats spread wider than this (relative half-range) are shown as their range.
const SPREAD_AS_RANGE: f64 = 0.5;

/// Failures longer than this are cut in the table (the full text is in the list below it).
const CELL_TEXT: usize = 48;

impl Table {
    /// Every failed cell, as "scenario, metric, who: error".
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for row in &self.rows {
            let cells =
                std::iter::once(("ustack", &row.ustack)).chain(row.baselines.iter().map(|(n, c)| (n.as_str(), c)));
            for (who, cell) in cells {
                if let Cell::Failed(e) = cell {
                    out.push(format!("{}, {}, {who}: {e}", row.scenario, row.metric));
                }
            }
        }
        out
    }

    /// The table as aligned Markdown, then the notes and the failures.
    pub fn render(&self) -> String {
        let header = ["Scenario", "Metric", "ustack", "Baseline", "Baseline figure", "ustack ÷ baseline"];
        let mut lines: Vec<[String; 6]> = Vec::new();
        let mut previous: Option<&str> = None;
        for row in &self.rows {
            // A scenario's name is written on its first row only.
            let scenario = if previous == Some(row.scenario.as_str()) { String::new() } else { row.scenario.clone() };
            previous = Some(&row.scenario);
            let ustack = format_cell(&row.ustack, row.unit);
            if row.baselines.is_empty() {
                lines.push([scenario, row.metric.clone(), ustack, "—".into(), String::new(), String::new()]);
                continue;
            }
            for (i, (name, cell)) in row.baselines.iter().enumerate() {
                let ratio = match (row.ustack.value(), cell.value()) {
                    _ if row.unit == Unit::Percent => "—".into(),
                    (Some(u), Some(b)) if b != 0.0 => format!("{}×", significant(u / b)),
                    _ => "—".into(),
                };
                let (scenario, metric, ustack) = if i == 0 {
                    (scenario.clone(), row.metric.clone(), ustack.clone())
                } else {
                    (String::new(), String::new(), String::new())
                };
                lines.push([scenario, metric, ustack, name.clone(), format_cell(cell, row.unit), ratio]);
            }
        }
        let mut widths = header.map(|h| h.chars().count());
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
        let _ =
            writeln!(out, "| {} |", header.iter().zip(widths).map(|(h, w)| pad(h, w)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(out, "|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for line in &lines {
            let _ = writeln!(
                out,
                "| {} |",
                line.iter().zip(widths).map(|(c, w)| pad(c, w)).collect::<Vec<_>>().join(" | ")
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        let failures = self.failures();
        if !failures.is_empty() {
            let _ = writeln!(out, "\nFailed measurements:");
            for failure in failures {
                let _ = writeln!(out, "- {failure}");
            }
        }
        out
    }
}

/// A cell as text: the median (with the repeats' spread), "skipped: why" or "failed: why".
fn format_cell(cell: &Cell, unit: Unit) -> String {
    match cell {
        Cell::Measured(f) => {
            let value = format_value(f.median, unit);
            if f.repeats == 1 || f.min == f.max {
                value
            } else if f.spread > SPREAD_AS_RANGE {
                // A percentage this large says less than the range itself.
                format!("{value} ({}–{})", format_value(f.min, unit), format_value(f.max, unit))
            } else {
                format!("{value} ±{:.0}%", f.spread * 100.0)
            }
        }
        Cell::Skipped(why) => cut(&format!("skipped: {why}")),
        Cell::Failed(why) => cut(&format!("failed: {why}")),
        Cell::Text(text) => text.clone(),
    }
}

fn cut(text: &str) -> String {
    if text.chars().count() <= CELL_TEXT {
        return text.to_string();
    }
    let mut short: String = text.chars().take(CELL_TEXT - 1).collect();
    short.push('…');
    short
}

/// A value in its unit's usual form.
pub fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Gbps => format!("{v:.2}"),
        Unit::PerSec if v >= 1e6 => format!("{}M", significant(v / 1e6)),
        Unit::PerSec if v >= 1e3 => format!("{}k", significant(v / 1e3)),
        Unit::PerSec => significant(v),
        Unit::Micros => significant(v),
        Unit::Millis => format!("{v:.0}"),
        Unit::Bytes if v.abs() >= 1024.0 * 1024.0 => format!("{} MiB", significant(v / 1024.0 / 1024.0)),
        Unit::Bytes if v.abs() >= 1024.0 => format!("{} KiB", significant(v / 1024.0)),
        Unit::Bytes => format!("{v:.0} B"),
        Unit::Count => format!("{v:.0}"),
        Unit::Percent => format!("{v:.0}%"),
    }
}

/// Three significant digits, without exponent: 0.0512, 1.23, 45.6, 789, 12345.
pub fn significant(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return format!("{v}");
    }
    let digits = a.log10().floor() as i32;
    let decimals = (2 - digits).max(0) as usize;
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(format_value(1.234, Unit::Gbps), "1.23");
        assert_eq!(format_value(37_210.0, Unit::PerSec), "37.2k");
        assert_eq!(format_value(1_300_000.0, Unit::PerSec), "1.30M");
        assert_eq!(format_value(17.04, Unit::Micros), "17.0");
        assert_eq!(format_value(1234.0, Unit::Micros), "1234");
        assert_eq!(format_value(0.0512, Unit::Micros), "0.0512");
        assert_eq!(format_value(3.0 * 1024.0, Unit::Bytes), "3.00 KiB");
        assert_eq!(format_value(1000.0, Unit::Count), "1000");
        assert_eq!(format_value(99.6, Unit::Percent), "100%");
    }

    #[test]
    fn rows_with_baselines_and_ratios() {
        let table = Table {
            rows: vec![Row {
                scenario: "Bulk".into(),
                metric: "Gbit/s".into(),
                unit: Unit::Gbps,
                ustack: Cell::Measured(Figure::of(&[1.0, 1.1, 0.9]).unwrap()),
                baselines: vec![
                    ("kernel".into(), Cell::once(20.0)),
                    ("tshark".into(), Cell::Skipped("not installed".into())),
                    ("raw".into(), Cell::Failed("boom".into())),
                ],
            }],
            notes: vec!["a note".into()],
        };
        let text = table.render();
        assert!(text.contains("| Bulk     | Gbit/s | 1.00 ±10% | kernel"), "{text}");
        assert!(text.contains("0.0500×"), "{text}");
        assert!(text.contains("skipped: not installed"), "{text}");
        assert!(text.contains("- a note"), "{text}");
        assert!(text.contains("Bulk, Gbit/s, raw: boom"), "{text}");
        assert_eq!(table.failures().len(), 1);
    }
}
