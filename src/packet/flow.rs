//! Conversations: a key shared by both directions of a 5-tuple, small flow ids, and the
//! bounded table both keep their state in.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

use super::summary::Summary;

/// Flows remembered before the oldest is forgotten (by [`FlowIds`] and by the
/// tcpdump formatter's initial-sequence-number table).
pub const DEFAULT_FLOW_CAPACITY: usize = 65536;

/// A 5-tuple in a canonical order, so both directions of a conversation share it.
///
/// The order is tcpdump's (print-tcp.c): the lower port first, and for equal ports the
/// lower address; so `reversed` below means exactly what tcpdump's `rev` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol number.
    pub protocol: u8,
    /// The canonical first endpoint.
    pub a: (IpAddr, u16),
    /// The canonical second endpoint.
    pub b: (IpAddr, u16),
}

impl FlowKey {
    /// The key of a packet from `src` to `dst`, and whether the packet runs from `b` to
    /// `a` (is "reversed").
    pub fn new(protocol: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> (FlowKey, bool) {
        let reversed = src.1 > dst.1 || (src.1 == dst.1 && src.0 > dst.0);
        let (a, b) = if reversed { (dst, src) } else { (src, dst) };
        (FlowKey { protocol, a, b }, reversed)
    }

    /// The key of a decoded IP packet: ports for TCP and UDP (also from a header cut
    /// short), the echo identifier for ICMP echoes (as ping tells its sessions apart),
    /// zero otherwise. `None` for packets that are not IP.
    pub fn of(summary: &Summary) -> Option<(FlowKey, bool)> {
        use super::summary::Transport;
        let ip = summary.ip()?;
        let (sport, dport) = match &ip.transport {
            Transport::Icmpv4(icmp) | Transport::Icmpv6(icmp) => icmp.echo.map_or((0, 0), |e| (e.id, e.id)),
            _ => summary.ports().unwrap_or((0, 0)),
        };
        Some(FlowKey::new(ip.protocol, (ip.src, sport), (ip.dst, dport)))
    }
}

/// Fragmented datagrams remembered by [`FragmentFlows`].
const FRAGMENTED_DATAGRAMS: usize = 4096;

/// The ports of fragmented datagrams, learnt from each first fragment, so that the later
/// fragments (which carry no transport header) count in their datagram's flow instead of
/// one of port 0. A later fragment seen before its first still goes to port 0's.
#[derive(Debug)]
pub struct FragmentFlows {
    ports: BoundedMap<(IpAddr, IpAddr, u8, u32), (u16, u16)>,
}

impl Default for FragmentFlows {
    fn default() -> Self {
        FragmentFlows { ports: BoundedMap::new(FRAGMENTED_DATAGRAMS) }
    }
}

impl FragmentFlows {
    /// [`FlowKey::of`], with a later fragment given its datagram's ports.
    pub fn key(&mut self, summary: &Summary) -> Option<(FlowKey, bool)> {
        let ip = summary.ip()?;
        let Some(fragment) = ip.fragment else { return FlowKey::of(summary) };
        let datagram = (ip.src, ip.dst, ip.protocol, fragment.id);
        if fragment.offset == 0 {
            let (key, reversed) = FlowKey::of(summary)?;
            let (src, dst) = if reversed { (key.b, key.a) } else { (key.a, key.b) };
            self.ports.insert(datagram, (src.1, dst.1));
            return Some((key, reversed));
        }
        let (sport, dport) = self.ports.get(&datagram).copied().unwrap_or((0, 0));
        Some(FlowKey::new(ip.protocol, (ip.src, sport), (ip.dst, dport)))
    }
}

/// A map that forgets its oldest entry (by first insertion) beyond a capacity, so a
/// long capture or a port scan cannot grow it without bound.
#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        BoundedMap { map: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Inserts or replaces; a new key may push out the oldest one.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Assigns each conversation a small integer, 1, 2, 3, ... in order of first
/// appearance; both directions of a 5-tuple share it. Remembers at most a capacity of
/// flows: a flow forgotten and seen again gets a new id.
#[derive(Debug)]
pub struct FlowIds {
    ids: BoundedMap<FlowKey, u64>,
    next: u64,
    fragments: FragmentFlows,
}

impl FlowIds {
    /// Remembers up to [`DEFAULT_FLOW_CAPACITY`] flows.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_FLOW_CAPACITY)
    }

    /// Remembers up to `capacity` flows (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        FlowIds { ids: BoundedMap::new(capacity), next: 1, fragments: FragmentFlows::default() }
    }

    /// The id of `key`'s flow, assigning the next one if it is new.
    pub fn id(&mut self, key: FlowKey) -> u64 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.next;
        self.next += 1;
        self.ids.insert(key, id);
        id
    }

    /// The flow id of a decoded packet (an IP fragment's is its datagram's); `None` when
    /// it is not IP.
    pub fn of(&mut self, summary: &Summary) -> Option<u64> {
        self.fragments.key(summary).map(|(key, _)| self.id(key))
    }

    /// Flows remembered now.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no flow is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.len() == 0
    }
}

impl Default for FlowIds {
    fn default() -> Self {
        Self::new()
    }
}
