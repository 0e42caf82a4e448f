//! The demux table as a snapshot: every listener, connection and UDP socket the demux
//! sends packets to, with states and queue lengths — what `serve --show-demux` prints.

use std::fmt;
use std::net::SocketAddr;

use smoltcp::socket::tcp;

use super::{Conn, DemuxCounters, Engine, Owner, SockState};

/// A listener's queues at the moment of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueues {
    /// listen()'s backlog.
    pub backlog: u32,
    /// Half-open connections in the SYN queue.
    pub syn: usize,
    /// How many the SYN queue holds.
    pub syn_limit: usize,
    /// Established connections waiting for accept().
    pub accept: usize,
    /// How many may wait.
    pub accept_limit: usize,
    /// SYNs dropped because a queue was full.
    pub syns_dropped: u64,
    /// Handshake-completing ACKs dropped because the accept queue was full.
    pub acks_dropped: u64,
    /// Handshake-completing ACKs answered with RST instead (reset on overflow).
    pub acks_reset: u64,
}

/// One entry of the demux table.
#[derive(Debug, Clone, PartialEq)]
pub struct DemuxRow {
    /// "tcp" or "udp".
    pub proto: &'static str,
    /// The bound (or connection's) local address.
    pub local: SocketAddr,
    /// The peer, for connections and connected UDP sockets.
    pub remote: Option<SocketAddr>,
    /// Who gets the packets: "#5" (a socket), "#3 syn-q" / "#3 accept-q" (waiting in
    /// listener #3's queues), or "closed" (a connection finishing after close()).
    pub owner: String,
    /// The RFC 9293 state for TCP; "bound" or "connected" for UDP.
    pub state: String,
    /// For listeners.
    pub queues: Option<ListenQueues>,
    /// For UDP sockets: datagrams dropped because the receive buffer was full.
    pub dropped: u64,
    /// The stack shard whose engine holds the row (0 for a stack of one shard; an engine
    /// alone does not know, so it says 0 and [`crate::Stack::demux_table`] fills it in).
    pub shard: usize,
}

/// The demux table: listeners, then connections, then UDP sockets.
#[derive(Debug, Clone, PartialEq)]
pub struct DemuxTable {
    /// Its entries.
    pub rows: Vec<DemuxRow>,
    /// How many shards' engines the table gathers (1 for an engine, or a stack of one
    /// shard); with more, it is shown with a SHARD column.
    pub shards: usize,
    /// The demux's decisions so far, counted by kind.
    pub counters: DemuxCounters,
}

impl Engine {
    /// A snapshot of the demux table.
    pub(super) fn table(&self) -> DemuxTable {
        let mut listeners = Vec::new();
        let mut udp = Vec::new();
        for (&id, entry) in &self.entries {
            let Some(local) = entry.local else { continue };
            match &entry.state {
                SockState::Listening(l) => listeners.push(DemuxRow {
                    proto: "tcp",
                    local,
                    remote: None,
                    owner: format!("#{id}"),
                    state: tcp::State::Listen.to_string(),
                    queues: Some(ListenQueues {
                        backlog: l.backlog,
                        syn: l.syn_queue.len(),
                        syn_limit: (l.backlog as usize).max(1),
                        accept: l.accept_queue.len(),
                        accept_limit: l.backlog as usize + 1,
                        syns_dropped: l.syns_dropped,
                        acks_dropped: l.acks_dropped,
                        acks_reset: l.acks_reset,
                    }),
                    dropped: 0,
                    shard: 0,
                }),
                SockState::Udp { peer, .. } => udp.push(DemuxRow {
                    proto: "udp",
                    local,
                    remote: *peer,
                    owner: format!("#{id}"),
                    state: if peer.is_some() { "connected" } else { "bound" }.into(),
                    queues: None,
                    dropped: entry.udp_dropped,
                    shard: 0,
                }),
                _ => {}
            }
        }
        let mut conns: Vec<DemuxRow> = self
            .conns
            .values()
            .map(|conn| DemuxRow {
                proto: "tcp",
                local: conn.tuple.local,
                remote: Some(conn.tuple.remote),
                owner: match conn.owner {
                    Owner::Socket(id) => format!("#{id}"),
                    Owner::Listener(id) if conn.state == tcp::State::SynReceived => format!("#{id} syn-q"),
                    Owner::Listener(id) => format!("#{id} accept-q"),
                    Owner::Orphan => "closed".into(),
                },
                state: conn.state.to_string(),
                queues: None,
                dropped: 0,
                shard: 0,
            })
            .collect();
        let key = |row: &DemuxRow| (row.local.port(), row.local, row.remote);
        listeners.sort_by_key(key);
        conns.sort_by_key(key);
        udp.sort_by_key(key);
        let rows = listeners.into_iter().chain(conns).chain(udp).collect();
        DemuxTable { rows, shards: 1, counters: self.demux_log.counters }
    }
}

impl fmt::Display for DemuxTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sharded = self.shards > 1;
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let queues = row.queues.map_or_else(
                    || if row.dropped > 0 { format!("dropped {}", row.dropped) } else { String::new() },
                    |q| {
                        let mut s = format!(
                            "syn {}/{}  accept {}/{}  backlog {}",
                            q.syn, q.syn_limit, q.accept, q.accept_limit, q.backlog
                        );
                        if q.syns_dropped + q.acks_dropped + q.acks_reset > 0 {
                            s += &format!(
                                "  dropped {} SYN, {} ACK; reset {}",
                                q.syns_dropped, q.acks_dropped, q.acks_reset
                            );
                        }
                        s
                    },
                );
                let shard = sharded.then(|| row.shard.to_string());
                shard
                    .into_iter()
                    .chain([
                        row.proto.to_string(),
                        row.local.to_string(),
                        row.remote.map_or("*".into(), |r| r.to_string()),
                        row.owner.clone(),
                        row.state.clone(),
                        queues,
                    ])
                    .collect()
            })
            .collect();
        let header: Vec<String> = sharded
            .then_some("SHARD")
            .into_iter()
            .chain(["PROTO", "LOCAL", "REMOTE", "SOCKET", "STATE", "QUEUES"])
            .map(String::from)
            .collect();
        let mut widths: Vec<usize> = header.iter().map(String::len).collect();
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    text += cell;
                } else {
                    text += &format!("{cell:<width$}  ", width = widths[i]);
                }
            }
            writeln!(f, "{}", text.trim_end())
        };
        line(f, &header)?;
        for row in &cells {
            line(f, row)?;
        }
        let c = &self.counters;
        write!(
            f,
            "packets: {} to connections, {} SYNs admitted, {} SYNs dropped, {} ACKs reset on overflow, {} ACKs dropped, \
             {} SYN cookies sent, {} accepted, {} TCP to no socket, {} UDP ({} dropped), {} UDP to no socket, \
             {} pings, {} other",
            c.connection,
            c.admitted,
            c.overflow_dropped,
            c.overflow_reset,
            c.ack_dropped,
            c.cookies_sent,
            c.cookies_accepted,
            c.tcp_no_socket,
            c.udp,
            c.udp_dropped,
            c.udp_no_socket,
            c.ping,
            c.other
        )
    }
}

/// A connection's handshake and close, for showing to a user.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionInfo {
    /// Its addresses and ports.
    pub tuple: super::TcpTuple,
    /// When its first SYN was sent or received, in milliseconds since the engine started.
    pub started_ms: f64,
    /// Each state entered, with milliseconds since the connection's first SYN.
    pub timeline: Vec<(f64, String)>,
    /// The handshake's round trip, in milliseconds (`Conn::handshake_rtt`).
    pub handshake_rtt_ms: Option<f64>,
    /// Who sent the first FIN, if anyone has.
    pub closed_first: Option<super::Closer>,
    /// Segments ustack's loss recovery resent.
    pub resent_segments: u64,
    /// Their bytes (data and FIN counted).
    pub resent_bytes: u64,
}

impl Conn {
    /// What ustack recorded about this connection, for showing to a user.
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            tuple: self.tuple,
            started_ms: self.born.total_micros() as f64 / 1000.0,
            timeline: self.timeline_ms(),
            handshake_rtt_ms: self.handshake_rtt.map(|d| d.total_micros() as f64 / 1000.0),
            closed_first: self.closed_first,
            resent_segments: self.recovery.counters().segments(),
            resent_bytes: self.recovery.counters().bytes,
        }
    }
}
