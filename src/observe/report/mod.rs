//! The HTML report of `inspect --html` and `sim --html`: the flow table, and for each TCP
//! connection a ladder diagram and a time-sequence graph per direction, for each UDP flow
//! a timeline — one self-contained page (inline CSS and SVG, nothing fetched).
//!
//! - [`model`]: what is drawn, as data, built packet by packet and bounded in memory
//!   ([`ReportBuilder`] → [`Report`]); tests check it without a browser.
//! - [`html`]: the page; the ladders and timelines laid out here.
//! - [`timeseq`]: the time-sequence graphs, drawn with plotters' SVG backend.
//!
//! A big capture stays a page that opens quickly: a ladder draws a connection's first
//! [`LADDER_HEAD`] and last [`LADDER_TAIL`] packets, a graph its first [`MAX_PACKETS`],
//! and only the first [`MAX_DRAWN`] connections and UDP flows are drawn (all are in
//! the table).

pub mod html;
pub mod model;
pub mod timeseq;

use std::time::Duration;

use crate::packet::Summary;

pub use model::{
    Connection, Datagram, LADDER_HEAD, LADDER_TAIL, LadderRow, MAX_DRAWN, MAX_KEPT, MAX_PACKETS, Mark, Report,
    ReportBuilder, RowKind, SeqSegment, TimeSequence, UdpFlow,
};

/// The page for `packets` (capture time, decoded packet, what became of it), titled
/// `title`: [`ReportBuilder`] and [`html::page`] in one call.
pub fn html_report<'a>(packets: impl IntoIterator<Item = (Duration, &'a Summary, Mark)>, title: &str) -> String {
    let mut builder = ReportBuilder::new();
    for (at, summary, mark) in packets {
        builder.observe(at, summary, mark);
    }
    html::page(&builder.finish(), title)
}

#[cfg(test)]
mod tests;
