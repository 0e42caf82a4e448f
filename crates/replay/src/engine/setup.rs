//! Setting a replay up: which conversations, ustack's addresses, its stack, and the
//! programs it runs in the captured host's place.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ustack::Cidr;

use crate::conversation::{Conversation, Proto};
use crate::programs::{self, ClientSpec, Gate, Log, Reads};
use crate::report::Trace;
use crate::script::{self, Captured};
use crate::{Options, ReplayError, Role};
use ustack::device::Wire;
use ustack::observe::Side;
use ustack::{Stack, StackConfig};

use super::{Counts, Engine, FlowState, Shown, cidr};

impl<'a> Engine<'a> {
    /// Sets up the stack and ustack's programs for `opts`.
    pub(crate) fn new(
        conv: &'a Conversation,
        captured: &'a Captured,
        opts: &'a Options,
    ) -> Result<Engine<'a>, ReplayError> {
        let selected: Vec<usize> = match opts.flow {
            Some(id) => {
                let Some(i) = conv.flow_index(id) else {
                    let ids: Vec<String> = conv.flows.iter().map(|f| f.id.to_string()).collect();
                    return Err(ReplayError::input(format!(
                        "no TCP or UDP flow {id} in the capture (its flows: {})",
                        ids.join(", ")
                    )));
                };
                vec![i]
            }
            None => (0..conv.flows.len()).collect(),
        };
        for &f in &selected {
            if let Some(why) = &conv.flows[f].unreplayable {
                return Err(ReplayError::input(format!("{}: {why}", conv.flows[f])));
            }
        }
        let local = match opts.role {
            Role::Server => Side::Server,
            Role::Client => Side::Client,
        };
        let mut is_selected = vec![false; conv.flows.len()];
        let mut by_tuple = HashMap::new();
        for &f in &selected {
            is_selected[f] = true;
            let flow = &conv.flows[f];
            let key = (flow.proto, flow.addr(local), flow.addr(local.other()));
            if let Some(other) = by_tuple.insert(key, f) {
                return Err(ReplayError::input(format!(
                    "flows {} and {} are the same 5-tuple (a port used again); replay them one at a time (--flow ID)",
                    conv.flows[other].id, flow.id
                )));
            }
        }

        // ustack takes the captured host's addresses; the replayer keeps the peers'.
        let mut locals: Vec<IpAddr> = Vec::new();
        let mut peers: Vec<IpAddr> = Vec::new();
        for &f in &selected {
            let flow = &conv.flows[f];
            let (l, p) = (flow.addr(local).ip(), flow.addr(local.other()).ip());
            if !locals.contains(&l) {
                locals.push(l);
            }
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        if let Some(both) = locals.iter().find(|a| peers.contains(a)) {
            return Err(ReplayError::input(format!(
                "{both} is a client in one flow and a server in another; replay one flow at a time (--flow ID)"
            )));
        }
        let addrs: Vec<Cidr> = locals.iter().map(|&a| cidr(a, &peers)).collect();
        // An IPv6 link carries at least 1280 bytes (RFC 8200); the IP length field at most 65535.
        let mtu = opts.mtu.clamp(1280, 65535);
        let (replayer, ustack_end) = Wire::pair(mtu).map_err(|e| ReplayError::Failed(format!("wire: {e}")))?;
        let config = StackConfig { addrs, syn_cookies: opts.syn_cookies, ..StackConfig::default() };
        let stack = Stack::new(ustack_end, config).map_err(|e| ReplayError::Failed(format!("stack: {e}")))?;

        // What ustack's programs read is kept where the captured host took part (it
        // accepted or connected, or took the datagrams), up to what the peer sent.
        let reads = Arc::new(Reads::default());
        for &f in &selected {
            let flow = &conv.flows[f];
            let (mine, peer) = (captured.sent(f, local), captured.sent(f, local.other()));
            let key = (flow.proto, flow.addr(local), flow.addr(local.other()));
            match flow.proto {
                Proto::Tcp if mine.syn.is_some() => reads.expect(key, peer.stream.len()),
                Proto::Udp if mine.unreachables.is_empty() => reads.expect(key, peer.datagrams.len()),
                _ => {}
            }
        }
        let gate = Gate::new(opts.hold_accept && opts.role == Role::Server);
        let log = Arc::new(Log::default());
        let shared = programs::Shared { gate: gate.clone(), log: log.clone(), reads: reads.clone() };
        let programs = match opts.role {
            Role::Server => {
                let mut tcp: Vec<SocketAddr> = Vec::new();
                let mut udp: Vec<SocketAddr> = Vec::new();
                for &f in &selected {
                    let flow = &conv.flows[f];
                    let server = captured.sent(f, Side::Server);
                    // A port the captured server refused (RST, ICMP) stays closed.
                    let (list, open) = match flow.proto {
                        Proto::Tcp => (&mut tcp, server.syn.is_some()),
                        Proto::Udp => (&mut udp, server.unreachables.is_empty()),
                    };
                    if open && !list.contains(&flow.server) {
                        list.push(flow.server);
                    }
                }
                programs::serve(&stack, opts.app, &tcp, &udp, opts.backlog, &shared)
            }
            Role::Client => {
                let specs = selected
                    .iter()
                    .map(|&f| {
                        let flow = &conv.flows[f];
                        ClientSpec {
                            flow: f,
                            id: flow.id,
                            tcp: flow.proto == Proto::Tcp,
                            local: flow.client,
                            remote: flow.server,
                            steps: script::client_script(conv, captured, f),
                        }
                    })
                    .collect();
                let connect_timeout = opts.timeout.max(Duration::from_secs(1)) * 4;
                programs::clients(&stack, specs, &shared, connect_timeout)
            }
        }
        // The captured hosts' addresses and ports are what ustack binds: when it cannot,
        // the capture asks for something ustack cannot be.
        .map_err(|e| ReplayError::input(format!("ustack cannot take the captured {}'s place: {e}", opts.role)))?;

        let n = conv.flows.len();
        // The whole replay is bounded too: generous for the largest capture replay takes.
        let budget = opts.timeout * 4 + Duration::from_millis(2) * conv.packets.len() as u32 + Duration::from_secs(60);
        Ok(Engine {
            conv,
            captured,
            opts,
            selected,
            is_selected,
            by_tuple,
            local,
            mtu,
            wire: replayer,
            stack: Some(stack),
            programs: Some(programs),
            gate,
            log,
            reads,
            flows: (0..n).map(|_| FlowState::default()).collect(),
            shown: vec![Shown::default(); n],
            trace: Trace::default(),
            failure: None,
            record: None,
            ping_seq: 0,
            pong: None,
            counts: Counts::default(),
            observed: Vec::new(),
            started: vec![false; n],
            dirty: BTreeSet::new(),
            suspect: BTreeSet::new(),
            released: !opts.hold_accept,
            deadline: Instant::now() + budget,
            fragments: Default::default(),
        })
    }
}
