//! The report as one self-contained HTML page: inline CSS and SVG, no script, nothing
//! fetched, so it opens anywhere, offline.
//!
//! Stable hooks for tests and scripts: `table.flows` with a `tr.flow` per flow;
//! `section.connection[data-flow="C > S"]` per TCP connection with `figure.ladder` (a
//! `g.segment[data-flags]` per arrow, its label in `text.label`, classes `retransmission`,
//! `reset`, `lost`, `damaged` where they apply) and `figure.time-sequence[data-sender]` per
//! direction; `section.udp-flow[data-flow]` with `g.datagram` per datagram.

use std::fmt::Write as _;

use super::super::flows::{Flow, Side, duration};
use super::model::{Connection, LadderRow, Mark, Report, RowKind, TimeSequence, UdpFlow};
use super::timeseq;

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1000px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table.flows { border-collapse: collapse; font-size: 0.9em; }
table.flows th, table.flows td { padding: 0.2em 0.6em; border-bottom: 1px solid #eee; text-align: left; }
table.flows td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
svg text { font-family: ui-monospace, monospace; font-size: 12px; }
.legend span { display: inline-block; margin-right: 1.2em; font-size: 0.85em; }
.legend i { display: inline-block; width: 1.4em; height: 0.3em; vertical-align: middle; margin-right: 0.3em; }
p.note { color: #555; font-size: 0.9em; }
";

const CLIENT_ARROW: &str = "#1f4e9c";
const SERVER_ARROW: &str = "#0b7285";
const RETRANSMISSION: &str = "#d9480f";
const RESET: &str = "#c92a2a";
const LOST: &str = "#868e96";

/// `client > server`, the key a section is found by.
fn flow_name(flow: &Flow) -> String {
    format!("{} > {}", flow.endpoint(Side::Client), flow.endpoint(Side::Server))
}

fn colour((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn rgb(c: plotters::style::RGBColor) -> (u8, u8, u8) {
    (c.0, c.1, c.2)
}

/// The whole page. `title` names what was drawn (a file, a simulation).
pub fn page(report: &Report, title: &str) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = escape(title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>ustack report: {title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>ustack report: {title}</h1>\n"
    );
    let table = &report.table;
    let _ = write!(
        out,
        "<p class=\"summary\">{}, {}; drawn: {}, {}",
        count(report.packets, "packet"),
        count(table.flows().len() as u64, "flow"),
        count(report.connections.len() as u64, "TCP connection"),
        count(report.udp.len() as u64, "UDP flow"),
    );
    if report.lost > 0 {
        let _ = write!(out, "; {} lost or damaged on the way", count(report.lost, "packet"));
    }
    out.push_str(".</p>\n");
    flow_table(&mut out, report);
    for connection in &report.connections {
        connection_section(&mut out, connection);
    }
    for udp in &report.udp {
        udp_section(&mut out, udp);
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn flow_table(out: &mut String, report: &Report) {
    let table = &report.table;
    out.push_str("<section id=\"flow-table\">\n<h2>Flows</h2>\n");
    if table.flows().is_empty() {
        out.push_str("<p class=\"note\">No IP flows.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table class=\"flows\">\n<thead><tr><th>#</th><th>proto</th><th>client</th><th>server</th>\
         <th>pkts →</th><th>bytes →</th><th>pkts ←</th><th>bytes ←</th><th>handshake</th><th>end</th>\
         <th>duration</th></tr></thead>\n<tbody>\n",
    );
    let drawn: std::collections::HashSet<usize> =
        report.connections.iter().map(|c| c.number).chain(report.udp.iter().map(|u| u.number)).collect();
    for (i, flow) in table.flows().iter().enumerate() {
        let number = i + 1;
        let (handshake, end) = match &flow.tcp {
            Some(tcp) => (tcp.handshake().to_string(), tcp.ending().to_string()),
            None => ("-".into(), "-".into()),
        };
        let cell = if drawn.contains(&number) {
            format!("<a href=\"#flow-{number}\">{number}</a>")
        } else {
            number.to_string()
        };
        let _ = writeln!(
            out,
            "<tr class=\"flow\" data-flow=\"{}\"><td class=\"n\">{cell}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            escape(&flow_name(flow)),
            flow.protocol_name(),
            escape(&flow.endpoint(Side::Client)),
            escape(&flow.endpoint(Side::Server)),
            flow.to_server.packets,
            flow.to_server.bytes,
            flow.to_client.packets,
            flow.to_client.bytes,
            escape(&handshake),
            escape(&end),
            duration(flow.duration()),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    if table.untracked() > 0 {
        let _ = writeln!(out, "<p class=\"note\">{} packets of flows beyond the table's bound.</p>", table.untracked());
    }
    if table.not_ip() > 0 {
        let _ = writeln!(out, "<p class=\"note\">{} records were not IP.</p>", table.not_ip());
    }
    out.push_str("</section>\n");
}

/// `1 packet`, `2 packets`.
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn ms_text(ms: f64) -> String {
    format!("{ms:.3}")
}

fn connection_section(out: &mut String, c: &Connection) {
    let flow = &c.flow;
    let name = flow_name(flow);
    let tcp = flow.tcp.clone().unwrap_or_default();
    let packets = flow.to_server.packets + flow.to_client.packets;
    let _ = writeln!(
        out,
        "<section class=\"connection\" id=\"flow-{n}\" data-flow=\"{f}\" data-packets=\"{packets}\" \
         data-handshake=\"{hs}\" data-ending=\"{end}\">\n<h2>Connection {n}: client {cl} → server {sv}</h2>",
        n = c.number,
        f = escape(&name),
        hs = escape(&tcp.handshake().to_string()),
        end = escape(&tcp.ending().to_string()),
        cl = escape(&flow.endpoint(Side::Client)),
        sv = escape(&flow.endpoint(Side::Server)),
    );
    let _ = write!(
        out,
        "<p class=\"facts\">{}; handshake {}; {}; lasted {}.",
        count(packets, "packet"),
        escape(&tcp.handshake().to_string()),
        escape(&tcp.ending().to_string()),
        duration(flow.duration())
    );
    if let (Some(syn), _) = c.handshake_rtt {
        let _ = write!(
            out,
            " <span class=\"handshake-rtt\">SYN → SYN-ACK {} (the round trip, if captured at the client)",
            duration(syn)
        );
        if let (_, Some(ack)) = c.handshake_rtt {
            let _ = write!(out, "; SYN-ACK → ACK {} (if captured at the server)", duration(ack));
        }
        out.push_str(".</span>");
    }
    out.push_str("</p>\n");
    ladder(out, c);
    for graph in c.graphs.iter().filter(|g| !g.is_empty()) {
        time_sequence(out, c, graph);
    }
    if c.not_graphed > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">The graphs show the first {} packets; {} more are not drawn.</p>",
            c.head.len() as u64 + c.elided + c.tail.len() as u64 - c.not_graphed,
            c.not_graphed
        );
    }
    out.push_str("</section>\n");
}

// The ladder's geometry, in pixels.
const LADDER_WIDTH: f64 = 900.0;
const TIME_X: f64 = 70.0;
const CLIENT_X: f64 = 150.0;
const SERVER_X: f64 = 650.0;
const ROW: f64 = 28.0;
const TOP: f64 = 56.0;
/// How far an arrow falls from sender to receiver: time passes on the way.
const SLOPE: f64 = 12.0;

fn legend(out: &mut String, items: &[(&str, String)]) {
    out.push_str("<p class=\"legend\">");
    for (what, colour) in items {
        let _ = write!(out, "<span><i style=\"background:{colour}\"></i>{}</span>", escape(what));
    }
    out.push_str("</p>\n");
}

fn ladder(out: &mut String, c: &Connection) {
    let flow = &c.flow;
    let rows = c.head.len() + c.tail.len() + usize::from(c.elided > 0);
    let height = TOP + rows as f64 * ROW + 20.0;
    let client = escape(&flow.endpoint(Side::Client));
    let server = escape(&flow.endpoint(Side::Server));
    let since = if flow.tcp.as_ref().is_some_and(|t| t.syn.is_some()) { "ms since SYN" } else { "ms since first" };
    out.push_str("<figure class=\"ladder\">\n");
    legend(
        out,
        &[
            ("client → server", CLIENT_ARROW.into()),
            ("server → client", SERVER_ARROW.into()),
            ("retransmission", RETRANSMISSION.into()),
            ("reset (RST)", RESET.into()),
            ("lost on the way (✕)", LOST.into()),
        ],
    );
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{LADDER_WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {LADDER_WIDTH} {height}\">\n<title>Ladder diagram of connection {}: client {client}, server {server}, \
         one arrow per packet</title>",
        c.number
    );
    let _ = writeln!(
        out,
        "<text x=\"{TIME_X}\" y=\"20\" text-anchor=\"end\">{since}</text>\
         <text class=\"endpoint\" x=\"{CLIENT_X}\" y=\"20\" text-anchor=\"middle\">client</text>\
         <text class=\"endpoint\" x=\"{CLIENT_X}\" y=\"36\" text-anchor=\"middle\">{client}</text>\
         <text class=\"endpoint\" x=\"{SERVER_X}\" y=\"20\" text-anchor=\"middle\">server</text>\
         <text class=\"endpoint\" x=\"{SERVER_X}\" y=\"36\" text-anchor=\"middle\">{server}</text>"
    );
    let bottom = height - 10.0;
    for x in [CLIENT_X, SERVER_X] {
        let _ =
            writeln!(out, "<line x1=\"{x}\" y1=\"44\" x2=\"{x}\" y2=\"{bottom}\" stroke=\"#444\" stroke-width=\"2\"/>");
    }
    let mut y = TOP;
    let mut row_y: Vec<(u64, f64)> = Vec::new();
    for row in &c.head {
        arrow(out, row, y);
        row_y.push((row.index, y));
        y += ROW;
    }
    if c.elided > 0 {
        let _ = writeln!(
            out,
            "<text class=\"elided\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">… {} more packets not drawn …</text>",
            (CLIENT_X + SERVER_X) / 2.0,
            y + 8.0,
            c.elided
        );
        y += ROW;
    }
    for row in &c.tail {
        arrow(out, row, y);
        row_y.push((row.index, y));
        y += ROW;
    }
    rtt_brackets(out, c, &row_y);
    out.push_str("</svg>\n");
    if c.elided > 0 {
        let _ = writeln!(
            out,
            "<figcaption>The first {} and the last {} packets; {} more between them are not drawn.</figcaption>",
            c.head.len(),
            c.tail.len(),
            c.elided
        );
    }
    out.push_str("</figure>\n");
}

fn arrow(out: &mut String, row: &LadderRow, y: f64) {
    let (x1, x2) = match row.from {
        Side::Client => (CLIENT_X, SERVER_X),
        Side::Server => (SERVER_X, CLIENT_X),
    };
    let mut classes = vec!["segment".to_string(), format!("from-{}", row.from)];
    let mut colour = match row.from {
        Side::Client => CLIENT_ARROW,
        Side::Server => SERVER_ARROW,
    };
    let mut label = row.label();
    match row.kind {
        RowKind::Retransmission => {
            classes.push("retransmission".into());
            colour = RETRANSMISSION;
            label.push_str(" retransmission");
        }
        RowKind::Reset => {
            classes.push("reset".into());
            colour = RESET;
            label.push_str(" reset");
        }
        RowKind::Normal => {}
    }
    let lost = row.mark != Mark::Seen;
    match row.mark {
        Mark::Lost => {
            classes.push("lost".into());
            label.push_str(" (lost)");
        }
        Mark::Damaged => {
            classes.push("damaged".into());
            label.push_str(" (damaged)");
        }
        Mark::Seen => {}
    }
    let mut hover =
        format!("{} ms: {} → {}: {}, window {}", ms_text(row.ms), row.from, row.from.other(), label, row.window);
    for (l, r) in &row.sacks {
        let _ = write!(hover, ", SACK {l}-{r}");
    }
    let _ = write!(
        out,
        "<g class=\"{}\" data-flags=\"{}\" data-from=\"{}\" data-seq=\"{}\" data-ack=\"{}\" data-len=\"{}\" data-ms=\"{}\">\
         <title>{}</title>",
        classes.join(" "),
        escape(&row.flags),
        row.from,
        row.seq,
        row.ack.map(|a| a.to_string()).unwrap_or_default(),
        row.len,
        ms_text(row.ms),
        escape(&hover)
    );
    let _ = write!(
        out,
        "<text class=\"time\" x=\"{TIME_X}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        y + 4.0,
        ms_text(row.ms)
    );
    // A lost packet's arrow stops halfway, where the link lost it.
    let (end_x, end_y) = if lost { ((x1 + x2) / 2.0, y + SLOPE / 2.0) } else { (x2, y + SLOPE) };
    let dash = if lost { " stroke-dasharray=\"6 4\"" } else { "" };
    let stroke = if lost { LOST } else { colour };
    let _ = write!(
        out,
        "<line x1=\"{x1}\" y1=\"{y}\" x2=\"{end_x}\" y2=\"{end_y}\" stroke=\"{stroke}\" stroke-width=\"2\"{dash}/>"
    );
    if lost {
        let _ = write!(
            out,
            "<text class=\"lost-mark\" x=\"{end_x}\" y=\"{}\" text-anchor=\"middle\" fill=\"{RESET}\" font-size=\"22\" font-weight=\"bold\">✕</text>",
            end_y + 8.0
        );
    } else {
        // The arrowhead: a triangle at the tip, along the line.
        let (dx, dy) = (x2 - x1, SLOPE);
        let len = (dx * dx + dy * dy).sqrt();
        let (ux, uy) = (dx / len, dy / len);
        let (bx, by) = (x2 - 10.0 * ux, end_y - 10.0 * uy);
        let (nx, ny) = (-uy * 4.5, ux * 4.5);
        let _ = write!(
            out,
            "<polygon points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{colour}\"/>",
            x2,
            end_y,
            bx + nx,
            by + ny,
            bx - nx,
            by - ny
        );
    }
    let _ = writeln!(
        out,
        "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{colour}\">{}</text></g>",
        (CLIENT_X + SERVER_X) / 2.0,
        y + SLOPE / 2.0 - 5.0,
        escape(&label)
    );
}

/// Brackets to the right of the server's line spanning the handshake's round trips.
fn rtt_brackets(out: &mut String, c: &Connection, row_y: &[(u64, f64)]) {
    let find =
        |pred: &dyn Fn(&LadderRow) -> bool| c.head.iter().filter(|r| pred(r)).map(|r| r.index).collect::<Vec<_>>();
    let y_of = |index: u64| row_y.iter().find(|(i, _)| *i == index).map(|(_, y)| *y);
    let syn_ack = find(&|r| r.from == Side::Server && r.flags.contains('S') && r.flags.contains('.'));
    let Some(&syn_ack) = syn_ack.first() else { return };
    let syn = find(&|r| r.from == Side::Client && r.flags == "S" && r.index < syn_ack);
    let ack = find(&|r| r.from == Side::Client && !r.flags.contains('S') && r.index > syn_ack);
    let x = SERVER_X + 30.0;
    let mut bracket =
        |from: Option<u64>, to: Option<u64>, what: &str, rtt: Option<std::time::Duration>, class: &str| {
            let (Some(from), Some(to), Some(rtt)) = (from, to, rtt) else { return };
            let (Some(y1), Some(y2)) = (y_of(from), y_of(to)) else { return };
            let (y1, y2) = (y1, y2 + SLOPE);
            let _ = writeln!(
                out,
                "<g class=\"rtt {class}\"><title>{what}: {}</title>\
             <path d=\"M{x},{y1} h6 V{y2} h-6\" fill=\"none\" stroke=\"#555\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"#333\">{what} {}</text></g>",
                duration(rtt),
                x + 10.0,
                (y1 + y2) / 2.0 + 4.0,
                duration(rtt)
            );
        };
    bracket(syn.last().copied(), Some(syn_ack), "RTT", c.handshake_rtt.0, "syn");
    let x_ack = x + 110.0;
    let (Some(ack), Some(rtt)) = (ack.first(), c.handshake_rtt.1) else { return };
    let (Some(y1), Some(y2)) = (y_of(syn_ack), y_of(*ack)) else { return };
    let y2 = y2 + SLOPE;
    let _ = writeln!(
        out,
        "<g class=\"rtt ack\"><title>SYN-ACK to ACK: {}</title><path d=\"M{x_ack},{y1} h6 V{y2} h-6\" fill=\"none\" stroke=\"#555\"/>\
         <text x=\"{}\" y=\"{}\" fill=\"#333\">ACK {}</text></g>",
        duration(rtt),
        x_ack + 10.0,
        (y1 + y2) / 2.0 + 4.0,
        duration(rtt)
    );
}

fn time_sequence(out: &mut String, c: &Connection, graph: &TimeSequence) {
    let (sender, receiver) = (graph.sender, graph.sender.other());
    let _ = writeln!(
        out,
        "<figure class=\"time-sequence\" data-sender=\"{sender}\" data-segments=\"{}\" data-retransmissions=\"{}\" \
         data-acks=\"{}\" data-sacks=\"{}\" data-zero-windows=\"{}\">\n<figcaption>Time-sequence graph, {sender} → {receiver}: \
         the {sender}'s segments (bars: the sequence numbers each covers, when it was sent), the {receiver}'s \
         acknowledgments and its window's right edge.</figcaption>",
        graph.segments.len(),
        graph.retransmissions(),
        graph.acks.len(),
        graph.sacks.len(),
        graph.zero_windows.len()
    );
    legend(
        out,
        &[
            ("segment", colour(rgb(timeseq::SEGMENT))),
            ("retransmission (●)", colour(rgb(timeseq::RETRANSMISSION))),
            ("lost on the way (✕)", colour(rgb(timeseq::LOST))),
            ("ACK", colour(rgb(timeseq::ACK))),
            ("ack + window", colour(rgb(timeseq::WINDOW))),
            ("SACK block", colour(rgb(timeseq::SACK))),
            ("zero window (▲)", colour(rgb(timeseq::ZERO_WINDOW))),
        ],
    );
    match timeseq::draw(graph) {
        Ok(svg) => {
            // Hover text and a name for screen readers, inside the plotted SVG.
            let title = format!(
                "<title>Time-sequence graph of connection {}, {sender} to {receiver}: {} segments, {} retransmitted, {} acknowledgments</title>",
                c.number,
                graph.segments.len(),
                graph.retransmissions(),
                graph.acks.len()
            );
            match svg.find("<svg").and_then(|at| svg[at..].find('>').map(|end| at + end + 1)) {
                Some(open) => {
                    out.push_str(&svg[..open]);
                    out.push_str(&title);
                    out.push_str(&svg[open..]);
                }
                None => out.push_str(&svg),
            }
        }
        Err(e) => {
            let _ = write!(out, "<p class=\"note\">{}</p>", escape(&e));
        }
    }
    out.push_str("\n</figure>\n");
}

// The UDP timeline's geometry.
const UDP_WIDTH: f64 = 900.0;
const UDP_LEFT: f64 = 150.0;
const UDP_RIGHT: f64 = 860.0;

fn udp_section(out: &mut String, u: &UdpFlow) {
    let flow = &u.flow;
    let _ = writeln!(
        out,
        "<section class=\"udp-flow\" id=\"flow-{n}\" data-flow=\"{f}\">\n<h2>UDP flow {n}: {cl} ⇄ {sv}</h2>\n\
         <p class=\"facts\">{} datagrams ({} bytes) from {cl}, {} ({} bytes) from {sv}, over {}.</p>",
        flow.to_server.packets,
        flow.to_server.bytes,
        flow.to_client.packets,
        flow.to_client.bytes,
        duration(flow.duration()),
        n = u.number,
        f = escape(&flow_name(flow)),
        cl = escape(&flow.endpoint(Side::Client)),
        sv = escape(&flow.endpoint(Side::Server)),
    );
    let height = 130.0;
    let span = u.datagrams.iter().map(|d| d.ms).fold(0.0f64, f64::max).max(0.001);
    let x_of = |ms: f64| UDP_LEFT + (UDP_RIGHT - UDP_LEFT) * ms / span;
    let lane = |side: Side| if side == Side::Client { 40.0 } else { 80.0 };
    let _ = writeln!(
        out,
        "<figure class=\"timeline\">\n<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{UDP_WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {UDP_WIDTH} {height}\">\n<title>Timeline of UDP flow {}: each datagram at the \
         time it was sent, the client's above, the server's below</title>",
        u.number
    );
    for side in [Side::Client, Side::Server] {
        let y = lane(side);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <line x1=\"{UDP_LEFT}\" y1=\"{y}\" x2=\"{UDP_RIGHT}\" y2=\"{y}\" stroke=\"#ccc\"/>",
            UDP_LEFT - 10.0,
            y + 4.0,
            escape(&flow.endpoint(side))
        );
    }
    // The time axis: five ticks.
    for i in 0..=4 {
        let ms = span * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{} ms</text>",
            x_of(ms),
            height - 12.0,
            ms_text(ms)
        );
    }
    for d in &u.datagrams {
        let (x, y) = (x_of(d.ms), lane(d.from));
        let lost = d.mark != Mark::Seen;
        let fill = if lost {
            LOST
        } else if d.from == Side::Client {
            CLIENT_ARROW
        } else {
            SERVER_ARROW
        };
        let _ = write!(
            out,
            "<g class=\"datagram{}\" data-from=\"{}\" data-len=\"{}\" data-ms=\"{}\"><title>{} ms: {} → {}, {} bytes{}</title>\
             <rect x=\"{:.1}\" y=\"{}\" width=\"4\" height=\"20\" fill=\"{fill}\"/></g>",
            if lost { " lost" } else { "" },
            d.from,
            d.len,
            ms_text(d.ms),
            ms_text(d.ms),
            d.from,
            d.from.other(),
            d.len,
            if lost { " (lost)" } else { "" },
            x - 2.0,
            y - 10.0,
        );
    }
    out.push_str("</svg>\n");
    if u.not_drawn > 0 {
        let _ = write!(out, "<figcaption>{} more datagrams are not drawn.</figcaption>", u.not_drawn);
    }
    out.push_str("</figure>\n</section>\n");
}
