//! Looking at traffic after the fact: capture files read record by record, the flow
//! table of a capture, and TCP connections drawn as ladder diagrams.
//!
//! - [`capture`]: pcap and pcapng from any reader, bounded in memory whatever the input.
//! - [`flows`]: every conversation, both directions together; TCP's handshake and close.
//! - [`ladder`]: one TCP connection as arrows between a client and a server column.
//! - [`report`]: all of it as one HTML page: flow table, ladders, time-sequence graphs.
//!
//! Uses [`packet`](crate::packet) to decode; prints nothing itself (the command line
//! does), and takes capture times as arguments, so everything here is deterministic.

pub mod capture;
pub mod flows;
pub mod ladder;
pub mod report;

pub use capture::{CaptureError, CaptureReader, Format, MAX_BLOCK, MAX_RECORD, Record};
pub use flows::{Counts, Ending, Flow, FlowTable, Handshake, Side, TcpConnection};
pub use ladder::{Ladder, LadderStep, draw};
