//! The live view of `serve`: a page at `/ui` that shows the stack's insides while
//! connections come and go, and the JSON endpoints behind it, for scripts too.
//!
//! - `GET /api/demux`: the demux table's rows (protocol, addresses, socket, state, queues).
//! - `GET /api/listeners`: each listener's queues now, and their history: samples of
//!   (milliseconds since serve started, SYN queue, accept queue), oldest first.
//! - `GET /api/handshakes`: the last [`HANDSHAKES`] connections' handshakes (SYN,
//!   SYN-ACK and ACK, in milliseconds since the first SYN) and states, but for those of
//!   `--ui-port` (the page's own).
//! - `GET /api/counters`: the demux's counters (drops, cookies, resets, ...).
//! - `GET /ui`: one HTML page (inline CSS, JS and SVG; nothing fetched from elsewhere)
//!   that fetches the four every [`REFRESH_MS`] ms and draws them.
//!
//! The history is kept by a sampler thread: a sample at each change of the demux table
//! and every [`SAMPLE_EVERY`] otherwise, no closer together than [`MIN_SPACING`], at
//! most [`SAMPLES`] per listener and [`LISTENERS`] listeners: memory is bounded however
//! long serve runs and however busy it is.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ustack::Stack;
use ustack::engine::{ConnectionInfo, DemuxCounters, DemuxTable, ListenQueues};
use ustack::packet::json_quote as quote;

/// Samples kept per listener: a minute at one per [`SAMPLE_EVERY`] when idle.
pub const SAMPLES: usize = 600;
/// Listeners whose history is kept (serve makes one per --tcp port).
pub const LISTENERS: usize = 32;
/// The sampler looks at least this often.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// ... and, when the table changes faster, no more often than this.
pub const MIN_SPACING: Duration = Duration::from_millis(10);
/// Handshakes shown.
pub const HANDSHAKES: usize = 8;
/// How often the page fetches the endpoints.
pub const REFRESH_MS: u32 = 500;

/// One look at a listener's queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    /// Milliseconds since serve started.
    ms: u64,
    syn: usize,
    accept: usize,
}

/// A listener's recent history.
struct Track {
    local: SocketAddr,
    /// A listener of a stack of several shards has a row, and a track, on each.
    shard: usize,
    samples: VecDeque<Sample>,
}

/// The live view's state: the stack it shows and the queues' history.
pub struct Live {
    stack: Arc<Stack>,
    started: Instant,
    history: History,
    /// The port of --ui-port: its connections (the page's own fetches, four a refresh)
    /// are left out of the handshakes, which they would crowd out.
    own_port: Option<u16>,
}

/// Each listener's samples, bounded.
#[derive(Default)]
struct History {
    tracks: Mutex<Vec<Track>>,
}

impl Live {
    /// The view of `stack`, with its sampler thread started (it ends when the stack stops).
    /// `own_port` is --ui-port's, whose handshakes are not shown.
    pub fn start(stack: Arc<Stack>, own_port: Option<u16>) -> std::io::Result<Arc<Live>> {
        let live = Arc::new(Live { stack, started: Instant::now(), history: History::default(), own_port });
        let sampler = live.clone();
        thread::Builder::new().name("live-sampler".into()).spawn(move || sampler.sample_forever())?;
        Ok(live)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn sample_forever(&self) {
        let mut seen = self.stack.generation();
        loop {
            self.history.sample(&self.stack.demux_table(), self.now_ms());
            thread::sleep(MIN_SPACING);
            seen = self.stack.wait_for_change(seen, SAMPLE_EVERY.saturating_sub(MIN_SPACING));
            if self.stack.error().is_some() {
                return;
            }
        }
    }

    /// The response body for `path` (`/ui` or `/api/...`) and its content type, or
    /// `None` when the path is not the live view's.
    pub fn page(&self, path: &str) -> Option<(&'static str, String)> {
        const JSON: &str = "application/json";
        Some(match path {
            "/ui" => ("text/html; charset=utf-8", UI_PAGE.replace("REFRESH_MS", &REFRESH_MS.to_string())),
            "/api/demux" => (JSON, format!("{{\"rows\":{}}}\n", rows_json(&self.stack.demux_table()))),
            "/api/listeners" => (JSON, self.history.listeners_json(&self.stack.demux_table(), self.now_ms())),
            "/api/handshakes" => {
                let mut connections = self.stack.connections();
                connections.retain(|c| Some(c.tuple.local.port()) != self.own_port);
                (JSON, handshakes_json(&connections))
            }
            "/api/counters" => (JSON, format!("{}\n", counters_json(&self.stack.demux_table().counters))),
            _ => return None,
        })
    }
}

impl History {
    /// Records each listener's queues as they are in `table`, at `ms`.
    fn sample(&self, table: &DemuxTable, ms: u64) {
        let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        for row in &table.rows {
            let Some(q) = row.queues else { continue };
            let sample = Sample { ms, syn: q.syn, accept: q.accept };
            let at = match tracks.iter().position(|t| (t.local, t.shard) == (row.local, row.shard)) {
                Some(at) => at,
                None => {
                    if tracks.len() == LISTENERS {
                        // Make room by forgetting a listener that is gone; when all are
                        // still there, the ones beyond the first LISTENERS go unrecorded.
                        let gone = tracks
                            .iter()
                            .position(|t| !table.rows.iter().any(|r| (r.local, r.shard) == (t.local, t.shard)));
                        let Some(gone) = gone else { continue };
                        tracks.remove(gone);
                    }
                    tracks.push(Track {
                        local: row.local,
                        shard: row.shard,
                        samples: VecDeque::with_capacity(SAMPLES),
                    });
                    tracks.len() - 1
                }
            };
            let samples = &mut tracks[at].samples;
            if samples.len() == SAMPLES {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    /// Each listener now, with its history.
    fn listeners_json(&self, table: &DemuxTable, now_ms: u64) -> String {
        let tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        let mut j = format!("{{\"now_ms\":{now_ms},\"listeners\":[");
        let mut first = true;
        for row in &table.rows {
            let Some(q) = row.queues else { continue };
            if !first {
                j.push(',');
            }
            first = false;
            let _ = write!(
                j,
                "{{\"local\":{},\"shard\":{},\"socket\":{},{},\"samples\":[",
                quote(&row.local.to_string()),
                row.shard,
                quote(&row.owner),
                queue_fields(&q)
            );
            if let Some(track) = tracks.iter().find(|t| (t.local, t.shard) == (row.local, row.shard)) {
                for (i, s) in track.samples.iter().enumerate() {
                    if i > 0 {
                        j.push(',');
                    }
                    let _ = write!(j, "[{},{},{}]", s.ms, s.syn, s.accept);
                }
            }
            j.push_str("]}");
        }
        j.push_str("]}\n");
        j
    }
}

/// A listener's queues as JSON object members (no braces): `"backlog":N,...`.
fn queue_fields(q: &ListenQueues) -> String {
    format!(
        "\"backlog\":{},\"syn\":{},\"syn_limit\":{},\"accept\":{},\"accept_limit\":{},\
         \"syns_dropped\":{},\"acks_dropped\":{},\"acks_reset\":{}",
        q.backlog, q.syn, q.syn_limit, q.accept, q.accept_limit, q.syns_dropped, q.acks_dropped, q.acks_reset
    )
}

/// The demux table's rows as a JSON array (also `GET /`'s `demux.rows`).
pub fn rows_json(table: &DemuxTable) -> String {
    let rows: Vec<String> = table
        .rows
        .iter()
        .map(|row| {
            let queues = row.queues.map_or("null".to_string(), |q| format!("{{{}}}", queue_fields(&q)));
            format!(
                "{{\"shard\":{},\"proto\":{},\"local\":{},\"remote\":{},\"socket\":{},\"state\":{},\"queues\":{queues}}}",
                row.shard,
                quote(row.proto),
                quote(&row.local.to_string()),
                row.remote.map_or("null".to_string(), |r| quote(&r.to_string())),
                quote(&row.owner),
                quote(&row.state)
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

/// The demux's counters as a JSON object (also `GET /`'s `demux.counters`).
pub fn counters_json(c: &DemuxCounters) -> String {
    let counters = [
        ("connection", c.connection),
        ("admitted", c.admitted),
        ("overflow_dropped", c.overflow_dropped),
        ("overflow_reset", c.overflow_reset),
        ("ack_dropped", c.ack_dropped),
        ("cookies_sent", c.cookies_sent),
        ("cookies_accepted", c.cookies_accepted),
        ("challenge_acks", c.challenge_acks),
        ("rst_ignored", c.rst_ignored),
        ("syn_acks_resent", c.syn_acks_resent),
        ("tcp_no_socket", c.tcp_no_socket),
        ("udp", c.udp),
        ("udp_dropped", c.udp_dropped),
        ("udp_no_socket", c.udp_no_socket),
        ("ping", c.ping),
        ("other", c.other),
    ];
    let counters: Vec<String> = counters.iter().map(|(name, n)| format!("\"{name}\":{n}")).collect();
    format!("{{{}}}", counters.join(","))
}

/// A JSON number with microsecond precision (`null` if not finite, which JSON cannot say).
pub fn json_num(x: f64) -> String {
    if x.is_finite() { format!("{x:.3}") } else { "null".into() }
}

/// The last [`HANDSHAKES`] connections: who opened, and when each of the three segments
/// of the handshake passed, in milliseconds since the first SYN, as the timeline records
/// them (the SYN-ACK leaves as ustack enters SYN-RECEIVED; the ACK arrives as it enters
/// ESTABLISHED; for a connection ustack opened, SYN-SENT and ESTABLISHED).
fn handshakes_json(connections: &[ConnectionInfo]) -> String {
    let recent = &connections[connections.len().saturating_sub(HANDSHAKES)..];
    let items: Vec<String> = recent
        .iter()
        .map(|c| {
            let at = |state: &str| c.timeline.iter().find(|(_, s)| s == state).map(|(ms, _)| *ms);
            let opt = |ms: Option<f64>| ms.map_or("null".to_string(), json_num);
            let active = at("SYN-SENT").is_some();
            let (syn, syn_ack, ack) = if active {
                (at("SYN-SENT"), at("ESTABLISHED"), at("ESTABLISHED"))
            } else {
                (Some(0.0), at("SYN-RECEIVED"), at("ESTABLISHED"))
            };
            let states: Vec<String> = c
                .timeline
                .iter()
                .map(|(ms, s)| format!("{{\"ms\":{},\"state\":{}}}", json_num(*ms), quote(s)))
                .collect();
            format!(
                "{{\"local\":{},\"remote\":{},\"opened_by\":{},\"started_ms\":{},\"syn_ms\":{},\"syn_ack_ms\":{},\
                 \"ack_ms\":{},\"rtt_ms\":{},\"state\":{},\"timeline\":[{}]}}",
                quote(&c.tuple.local.to_string()),
                quote(&c.tuple.remote.to_string()),
                quote(if active { "ustack" } else { "peer" }),
                json_num(c.started_ms),
                opt(syn),
                opt(syn_ack),
                opt(ack),
                opt(c.handshake_rtt_ms),
                quote(c.timeline.last().map_or("", |(_, s)| s.as_str())),
                states.join(",")
            )
        })
        .collect();
    format!("{{\"handshakes\":[{}]}}\n", items.join(","))
}

/// The page: everything inline, so it works with no network beyond serve itself.
const UI_PAGE: &str = r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ustack live</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f3f3f3; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.listen { background: #eef6ff; } .queued { background: #fff6e0; }
.graphs, .ladders { display: flex; flex-wrap: wrap; gap: 16px; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 6px 10px; }
.syn { stroke: #e07b00; } .accept { stroke: #1f6fd1; } .limit { stroke: #999; stroke-dasharray: 4 3; }
svg text { font: 11px system-ui, sans-serif; } #status { color: #666; }
.counters td:first-child { font-family: monospace; }
.counters { columns: 1; } #counters tbody { display: grid; grid-template-columns: repeat(4, max-content); column-gap: 24px; }
</style></head>
<body>
<h1>ustack: live view</h1>
<p id="status">loading…</p>
<h2>Listen queues</h2>
<p>Each listener's SYN queue (half-open connections, <span style="color:#e07b00">orange</span>) and accept queue
(established, waiting for accept(), <span style="color:#1f6fd1">blue</span>) over the last minute; the dashed
line is the accept queue's limit.</p>
<div class="graphs" id="graphs"></div>
<h2>Counters</h2>
<p>The demux's decisions: SYNs and ACKs dropped for a full queue (overflow_dropped, ack_dropped), SYN cookies,
resets, segments for no socket.</p>
<table class="counters" id="counters"><tbody></tbody></table>
<h2>Recent handshakes</h2>
<div class="ladders" id="ladders"></div>
<h2>Demux table</h2>
<table id="demux"><thead><tr><th>shard</th><th>proto</th><th>local</th><th>remote</th><th>socket</th><th>state</th><th>queues</th></tr></thead><tbody></tbody></table>
<p id="observed"></p>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
// What this page itself has seen of each listener's accept queue, across refreshes.
const seen = {};
function el(tag, attrs, text) {
  const e = tag.includes(":") || ["svg","line","polyline","text","g","path","rect"].includes(tag)
    ? document.createElementNS(NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function queueGraph(l, now) {
  const W = 420, H = 150, L = 30, B = 20, span = 60000;
  const start = Math.max(0, now - span);
  // Small limits are drawn; a large backlog would flatten every line, so then the
  // highest sample decides the scale.
  const highest = Math.max(0, ...l.samples.map(s => Math.max(s[1], s[2])));
  const top = Math.max(2, highest, l.accept_limit <= 16 ? l.accept_limit : 0);
  const x = ms => L + (W - L - 5) * (ms - start) / Math.max(1, now - start);
  const y = n => H - B - (H - B - 10) * n / top;
  const svg = el("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-listener": l.local});
  svg.append(el("line", {x1: L, y1: y(0), x2: W - 5, y2: y(0), stroke: "#444"}));
  svg.append(el("line", {x1: L, y1: 5, x2: L, y2: y(0), stroke: "#444"}));
  svg.append(el("text", {x: 4, y: y(top) + 4}, String(top)));
  svg.append(el("text", {x: 4, y: y(0) + 4}, "0"));
  svg.append(el("text", {x: L, y: H - 4}, `${((now - start) / 1000).toFixed(0)} s ago`));
  svg.append(el("text", {x: W - 30, y: H - 4}, "now"));
  if (l.accept_limit <= top)
    svg.append(el("line", {x1: L, y1: y(l.accept_limit), x2: W - 5, y2: y(l.accept_limit), class: "limit"}));
  const samples = l.samples.filter(s => s[0] >= start);
  for (const [k, cls] of [[1, "syn"], [2, "accept"]]) {
    // A step line: a queue length holds until the next sample.
    const pts = [];
    samples.forEach((s, i) => { if (i > 0) pts.push(`${x(s[0]).toFixed(1)},${y(samples[i-1][k]).toFixed(1)}`); pts.push(`${x(s[0]).toFixed(1)},${y(s[k]).toFixed(1)}`); });
    svg.append(el("polyline", {points: pts.join(" "), fill: "none", "stroke-width": 2, class: cls}));
  }
  return svg;
}
function ladder(h) {
  const W = 260, H = 120, A = 40, Bx = 220;
  const svg = el("svg", {width: W, height: H, class: "ladder"});
  const peer = h.opened_by === "peer" ? h.remote : h.local, other = h.opened_by === "peer" ? h.local : h.remote;
  svg.append(el("text", {x: 2, y: 12}, h.opened_by === "peer" ? "client" : "ustack"));
  svg.append(el("text", {x: Bx - 20, y: 12}, h.opened_by === "peer" ? "ustack" : "server"));
  svg.append(el("line", {x1: A, y1: 18, x2: A, y2: H - 4, stroke: "#444"}));
  svg.append(el("line", {x1: Bx, y1: 18, x2: Bx, y2: H - 4, stroke: "#444"}));
  const arrows = [["SYN", h.syn_ms, A, Bx, 35], ["SYN-ACK", h.syn_ack_ms, Bx, A, 65], ["ACK", h.ack_ms, A, Bx, 95]];
  for (const [label, ms, from, to, yy] of arrows) {
    if (ms === null) continue;
    const g = el("g", {class: "arrow"});
    g.append(el("line", {x1: from, y1: yy - 8, x2: to, y2: yy + 8, stroke: "#1f6fd1", "stroke-width": 1.5}));
    const tip = to > from ? -1 : 1;
    g.append(el("path", {d: `M${to},${yy + 8} l${tip * 9},-2 l${tip * 3},-6 z`, fill: "#1f6fd1"}));
    g.append(el("text", {x: (A + Bx) / 2 - 22, y: yy - 4, class: "arrow-label"}, label));
    g.append(el("text", {x: 2, y: yy + 4}, `${ms.toFixed(2)}`));
    svg.append(g);
  }
  const card = el("div", {class: "card"});
  card.append(el("div", {}, `${peer} → ${other}`));
  card.append(svg);
  const rtt = h.rtt_ms !== null ? `RTT ${h.rtt_ms.toFixed(3)} ms`
    : h.ack_ms !== null ? "no RTT: state began at the ACK (a SYN cookie's)" : "waiting for the ACK";
  card.append(el("div", {}, `${rtt}; now ${h.state} (ms since the SYN on the left)`));
  return card;
}
async function refresh() {
  try {
    const get = p => fetch(p, {cache: "no-store"}).then(r => r.json());
    const [demux, listeners, handshakes, counters] =
      await Promise.all(["/api/demux", "/api/listeners", "/api/handshakes", "/api/counters"].map(get));
    const graphs = document.getElementById("graphs");
    graphs.replaceChildren(...listeners.listeners.map(l => {
      const key = `${l.local} ${l.shard}`, s = seen[key] || (seen[key] = {peak: 0});
      s.peak = Math.max(s.peak, l.accept, ...l.samples.map(x => x[2]));
      const peak = Math.max(0, ...l.samples.map(x => x[2]));
      const card = el("div", {class: "card listener", "data-local": l.local});
      card.append(el("div", {}, `${l.local} (shard ${l.shard}, socket ${l.socket}, backlog ${l.backlog})`));
      card.append(queueGraph(l, listeners.now_ms));
      card.append(el("div", {class: "queues-now"},
        `SYN queue ${l.syn}/${l.syn_limit}, accept queue ${l.accept}/${l.accept_limit}; ` +
        `accept queue peak ${peak} in the last minute; SYNs dropped ${l.syns_dropped}, ACKs dropped ${l.acks_dropped}, reset ${l.acks_reset}`));
      return card;
    }));
    const body = document.querySelector("#demux tbody");
    body.replaceChildren(...demux.rows.map(r => {
      const tr = el("tr", {class: r.state === "LISTEN" ? "listen" : (r.socket.includes("-q") ? "queued" : "")});
      const q = r.queues ? `syn ${r.queues.syn}/${r.queues.syn_limit}, accept ${r.queues.accept}/${r.queues.accept_limit}` : "";
      for (const v of [String(r.shard), r.proto, r.local, r.remote || "*", r.socket, r.state, q]) tr.append(el("td", {}, v));
      return tr;
    }));
    document.getElementById("ladders").replaceChildren(...handshakes.handshakes.slice().reverse().map(ladder));
    const ctab = document.querySelector("#counters tbody");
    ctab.replaceChildren(...Object.entries(counters).map(([k, v]) => {
      const tr = el("tr", {"data-counter": k});
      tr.append(el("td", {}, k)); tr.append(el("td", {class: "num"}, String(v)));
      return tr;
    }));
    document.getElementById("observed").textContent = "seen by this page: " +
      Object.entries(seen).map(([k, s]) => `${k} accept queue peak ${s.peak}`).join("; ");
    document.getElementById("status").textContent =
      `updated at ${(listeners.now_ms / 1000).toFixed(1)} s since serve started; ${demux.rows.length} demux rows; refreshing every REFRESH_MS ms`;
  } catch (e) {
    document.getElementById("status").textContent = "cannot reach ustack: " + e;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body></html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    /// Viewable with no network but serve: the only URL is SVG's namespace name.
    #[test]
    fn the_page_fetches_nothing_from_elsewhere() {
        let page = UI_PAGE.replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "src=", "href=", "@import"] {
            assert!(!page.contains(needle), "{needle}");
        }
    }

    #[test]
    fn history_is_bounded() {
        use ustack::engine::{DemuxRow, ListenQueues};
        let queues = ListenQueues {
            backlog: 1,
            syn: 0,
            syn_limit: 1,
            accept: 1,
            accept_limit: 2,
            syns_dropped: 0,
            acks_dropped: 0,
            acks_reset: 0,
        };
        let listeners = |n: usize| -> DemuxTable {
            DemuxTable {
                rows: (0..n)
                    .map(|i| DemuxRow {
                        proto: "tcp",
                        local: SocketAddr::from(([10, 7, 0, 2], 1000 + i as u16)),
                        remote: None,
                        owner: format!("#{i}"),
                        state: "LISTEN".into(),
                        queues: Some(queues),
                        dropped: 0,
                        shard: 0,
                    })
                    .collect(),
                shards: 1,
                counters: DemuxCounters::default(),
            }
        };
        let history = History::default();
        for ms in 0..SAMPLES as u64 * 2 {
            history.sample(&listeners(LISTENERS + 5), ms);
        }
        let json = history.listeners_json(&listeners(1), 5000);
        assert!(json.starts_with("{\"now_ms\":5000,\"listeners\":[{\"local\":\"10.7.0.2:1000\""), "{json}");
        let tracks = history.tracks.lock().unwrap();
        assert_eq!(tracks.len(), LISTENERS);
        assert!(tracks.iter().all(|t| t.samples.len() == SAMPLES));
        drop(tracks);
        // Listeners that closed make room for new ones.
        let mut moved = listeners(3);
        for row in &mut moved.rows {
            row.local.set_port(row.local.port() + 2000);
        }
        history.sample(&moved, 1);
        let tracks = history.tracks.lock().unwrap();
        assert_eq!(tracks.len(), LISTENERS);
        assert_eq!(tracks.iter().filter(|t| t.local.port() >= 3000).count(), 3);
    }
}
