//! The time-sequence graph of one direction, drawn with plotters' SVG backend: the
//! sender's segments as vertical bars (sequence numbers covered, at the time sent), the
//! receiver's ACK line and window line (ack + window) as steps, its SACK blocks, and its
//! zero windows — the graph tcptrace and Wireshark draw.

use plotters::prelude::*;

use super::model::{Mark, TimeSequence};

/// The graph's size in pixels.
pub const SIZE: (u32, u32) = (760, 360);

pub(super) const SEGMENT: RGBColor = RGBColor(0x1f, 0x4e, 0x9c);
pub(super) const RETRANSMISSION: RGBColor = RGBColor(0xd9, 0x48, 0x0f);
pub(super) const LOST: RGBColor = RGBColor(0x86, 0x8e, 0x96);
pub(super) const ACK: RGBColor = RGBColor(0x2b, 0x8a, 0x3e);
pub(super) const WINDOW: RGBColor = RGBColor(0xb0, 0x8d, 0x00);
pub(super) const SACK: RGBColor = RGBColor(0x86, 0x2e, 0x9c);
pub(super) const ZERO_WINDOW: RGBColor = RGBColor(0xc9, 0x2a, 0x2a);

/// The points of a step line through `points`: each value holds until the next.
fn steps(points: &[(f64, i64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(ms, y)) in points.iter().enumerate() {
        if i > 0 {
            out.push((ms, points[i - 1].1 as f64));
        }
        out.push((ms, y as f64));
    }
    out
}

/// The graph as an `<svg>` element.
pub fn draw(graph: &TimeSequence) -> Result<String, String> {
    let mut svg = String::new();
    draw_into(graph, &mut svg).map_err(|e| format!("drawing the time-sequence graph: {e}"))?;
    Ok(svg)
}

/// Plotters' errors, as text.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn draw_into(graph: &TimeSequence, svg: &mut String) -> Result<(), String> {
    let xs = graph.segments.iter().map(|s| s.ms).chain(graph.acks.iter().map(|a| a.0));
    let (mut x0, mut x1) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    // The data and the acknowledgments set the scale; the window's edge is shown when it
    // is near them (a window far above a short transfer would squash it to a line), and
    // otherwise runs along the top, meaning "further up".
    let ys = graph
        .segments
        .iter()
        .flat_map(|s| [s.start, s.end])
        .chain(graph.acks.iter().map(|a| a.1))
        .chain(graph.sacks.iter().flat_map(|s| [s.1, s.2]));
    let (mut y0, mut y1) = ys.fold((i64::MAX, i64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if y0 > y1 {
        (y0, y1) = (0, 1);
    }
    let room_above = (y1 - y0).max(10) / 2;
    let window_top = graph.window.iter().map(|w| w.1).max().unwrap_or(y1);
    y1 = y1.max(window_top.min(y1 + room_above));
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    // Room around the points, and never an empty range.
    let x_pad = ((x1 - x0) * 0.03).max(0.05);
    let y_pad = ((y1 - y0) / 30).max(1);
    let (x0, x1) = (x0 - x_pad, x1 + x_pad);
    let (y0, y1) = ((y0 - y_pad) as f64, (y1 + y_pad) as f64);
    let window: Vec<(f64, i64)> = graph.window.iter().map(|&(ms, edge)| (ms, edge.min(y1 as i64))).collect();
    // Half a cap's width: 3 pixels of the plot's (about 640) in milliseconds.
    let cap = (x1 - x0) * 3.0 / 640.0;
    let decimals = if x1 - x0 >= 20.0 {
        0
    } else if x1 - x0 >= 2.0 {
        1
    } else {
        3
    };

    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(text)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(text)?;
    chart
        .configure_mesh()
        .x_desc("ms since the connection's first packet")
        .y_desc("relative sequence number")
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| format!("{v:.decimals$}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(RGBColor(0xee, 0xee, 0xee))
        .draw()
        .map_err(text)?;

    // The window line first, so the ACK line and the segments are drawn over it.
    chart.draw_series(LineSeries::new(steps(&window), WINDOW.stroke_width(1))).map_err(text)?;
    chart.draw_series(LineSeries::new(steps(&graph.acks), ACK.stroke_width(2))).map_err(text)?;
    chart
        .draw_series(
            graph
                .sacks
                .iter()
                .map(|&(ms, l, r)| PathElement::new(vec![(ms, l as f64), (ms, r as f64)], SACK.stroke_width(3))),
        )
        .map_err(text)?;
    chart
        .draw_series(graph.segments.iter().map(|s| {
            let colour = match (s.mark, s.retransmission) {
                (Mark::Lost | Mark::Damaged, _) => LOST,
                (Mark::Seen, true) => RETRANSMISSION,
                (Mark::Seen, false) => SEGMENT,
            };
            // tcptrace's "I": a bar with caps, so that a short segment still shows beside a line.
            let (lo, hi) = (s.start as f64, s.end as f64);
            let (left, right) = (s.ms - cap, s.ms + cap);
            PathElement::new(
                vec![(left, lo), (right, lo), (s.ms, lo), (s.ms, hi), (left, hi), (right, hi)],
                colour.stroke_width(2),
            )
        }))
        .map_err(text)?;
    // A retransmission's and a lost segment's bars are short at any scale: a marker says where.
    chart
        .draw_series(
            graph
                .segments
                .iter()
                .filter(|s| s.retransmission && s.mark == Mark::Seen)
                .map(|s| Circle::new((s.ms, s.end as f64), 3, RETRANSMISSION.filled())),
        )
        .map_err(text)?;
    chart
        .draw_series(
            graph
                .segments
                .iter()
                .filter(|s| s.mark != Mark::Seen)
                .map(|s| Cross::new((s.ms, s.end as f64), 4, ZERO_WINDOW.stroke_width(2))),
        )
        .map_err(text)?;
    chart
        .draw_series(
            graph.zero_windows.iter().map(|&(ms, ack)| TriangleMarker::new((ms, ack as f64), 6, ZERO_WINDOW.filled())),
        )
        .map_err(text)?;
    root.present().map_err(text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_hold_each_value_until_the_next() {
        assert_eq!(
            steps(&[(0.0, 1), (2.0, 5), (3.0, 9)]),
            [(0.0, 1.0), (2.0, 1.0), (2.0, 5.0), (3.0, 5.0), (3.0, 9.0)]
        );
        assert!(steps(&[]).is_empty());
    }
}
