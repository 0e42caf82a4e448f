//! What a replay tells: a one-line summary when ustack did what the captured host did,
//! or the first difference with both sides' packets next to each other.
//!
//! The side-by-side trace is kept per *step*: a step opens with a packet of the captured
//! peer and holds what the captured host sent after it (left) and, on the right, what
//! the replayer sent for that packet and what ustack sent until the next one. Segment
//! boundaries differ between the columns; the steps line them up. Only the last
//! [`KEPT_STEPS`] steps are kept, and a bounded number of lines in each.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};

use super::differences::Observed;

/// Steps the trace keeps (the ones before a difference are the ones that matter).
pub const KEPT_STEPS: usize = 12;
/// Lines one column of one step keeps.
const KEPT_LINES: usize = 10;
/// Width of the left column.
const COLUMN: usize = 60;

#[derive(Debug, Default)]
struct Column {
    lines: Vec<String>,
    more: usize,
}

impl Column {
    fn push(&mut self, line: String) {
        if self.lines.len() < KEPT_LINES {
            self.lines.push(line);
        } else {
            self.more += 1;
        }
    }

    fn rows(&self) -> Vec<String> {
        let mut rows = self.lines.clone();
        if self.more > 0 {
            rows.push(format!("  … {} more", self.more));
        }
        rows
    }
}

#[derive(Debug, Default)]
struct StepTrace {
    captured: Column,
    replayed: Column,
}

/// Both sides' packets, step by step.
#[derive(Debug)]
pub struct Trace {
    steps: VecDeque<StepTrace>,
    dropped: usize,
}

impl Default for Trace {
    fn default() -> Self {
        Trace { steps: VecDeque::from([StepTrace::default()]), dropped: 0 }
    }
}

impl Trace {
    /// Starts the step of the next captured peer packet.
    pub fn step(&mut self) {
        if self.steps.len() >= KEPT_STEPS {
            self.steps.pop_front();
            self.dropped += 1;
        }
        self.steps.push_back(StepTrace::default());
    }

    fn current(&mut self) -> &mut StepTrace {
        if self.steps.is_empty() {
            self.steps.push_back(StepTrace::default());
        }
        self.steps.back_mut().expect("not empty")
    }

    /// A captured packet (left column).
    pub fn captured(&mut self, line: String) {
        self.current().captured.push(line);
    }

    /// A packet of the replay: sent by the replayer or by ustack (right column).
    pub fn replayed(&mut self, line: String) {
        self.current().replayed.push(line);
    }

    /// The two columns, with a header.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "  {:<COLUMN$} | ustack (the replay)", "Linux (the capture)");
        let _ = writeln!(out, "  {:-<COLUMN$}-+-{:-<COLUMN$}", "", "");
        if self.dropped > 0 {
            let _ = writeln!(out, "  {:<COLUMN$} | ", format!("… {} earlier steps matched …", self.dropped));
        }
        for step in &self.steps {
            let (left, right) = (step.captured.rows(), step.replayed.rows());
            if left.is_empty() && right.is_empty() {
                continue;
            }
            for i in 0..left.len().max(right.len()) {
                let l = left.get(i).map_or("", String::as_str);
                let r = right.get(i).map_or("", String::as_str);
                let _ = writeln!(out, "  {:<COLUMN$} | {}", clip(l, COLUMN), r).map(|_| ());
            }
        }
    }
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut t: String = s.chars().take(width - 1).collect();
    t.push('…');
    t
}

/// The first difference between ustack and the captured host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The conversation, as `inspect --flows` numbers it.
    pub flow: Option<u64>,
    /// The capture record the replay had reached.
    pub record: Option<u64>,
    /// What differs, one line.
    pub what: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = self.flow {
            write!(f, "flow {id}: ")?;
        }
        f.write_str(&self.what)?;
        if let Some(r) = self.record {
            write!(f, " (at capture record {r})")?;
        }
        Ok(())
    }
}

/// How a replay went.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// The first difference, or `None` if ustack did what the captured host did.
    pub difference: Option<Difference>,
    /// One line: what was replayed and how much matched.
    pub summary: String,
    /// A hint beside a difference (the captured server ran another application).
    pub hint: Option<String>,
    /// Both sides' packets up to the difference.
    pub trace: String,
    /// Differences in what is not compared (see [`super::differences`]).
    pub observed: Vec<Observed>,
    /// What ustack's programs reported (errors from the socket API).
    pub program_log: Vec<String>,
}

impl ReplayOutcome {
    /// Whether ustack did what the captured host did.
    pub fn matched(&self) -> bool {
        self.difference.is_none()
    }

    /// The full report: the summary line, or the difference with both sides' packets.
    pub fn render(&self, name: &str) -> String {
        let mut out = String::new();
        match &self.difference {
            None => {
                let _ = writeln!(out, "replay {name}: match: {}", self.summary);
            }
            Some(d) => {
                let _ = writeln!(out, "replay {name}: DIFFERENCE: {d}");
                if let Some(hint) = &self.hint {
                    let _ = writeln!(out, "  note: {hint}");
                }
                for line in &self.program_log {
                    let _ = writeln!(out, "  ustack's program: {line}");
                }
                let _ = writeln!(out);
                out.push_str(&self.trace);
                let _ = writeln!(out, "  {:COLUMN$}   ^ here", "");
                let _ = writeln!(out, "\n  replayed so far: {}", self.summary);
            }
        }
        out
    }
}
