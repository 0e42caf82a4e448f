//! Where ustack differs from Linux on purpose, in what a replay does not compare.
//!
//! A replay compares control flags, the acknowledgment relation and the byte streams
//! (see [`super`]). Everything else about a packet legitimately differs between two TCP
//! implementations, but it is still *observed*: for each conversation the replay notes
//! how ustack's SYN (or SYN-ACK), RST, data segments, datagrams and ICMP errors differ
//! from the captured host's in options, window, TTL and the like, as [`Observed`] rows.
//!
//! [`INTENDED`] is the one list of those differences that are known and meant. A replay
//! sorts what it observed into listed and unlisted ([`classify`]); `tests/linux_captures.rs`
//! replays every fixture and asserts that nothing unlisted turns up and that every
//! listed row is still seen — so a new difference (or one that went away) is noticed,
//! and either fixed or written down here with its reason.

use std::fmt;

/// A difference the replay saw in something it does not compare.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Observed {
    /// What differs, e.g. "SYN-ACK window scale".
    pub aspect: String,
    /// The captured (Linux) host's value.
    pub linux: String,
    /// ustack's value.
    pub ustack: String,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: Linux {}, ustack {}", self.aspect, self.linux, self.ustack)
    }
}

/// A known, intended difference from Linux.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intended {
    /// What differs (as [`Observed::aspect`]).
    pub aspect: &'static str,
    /// Linux's value in the fixtures (Linux 6.18, default sysctls).
    pub linux: &'static str,
    /// ustack's value.
    pub ustack: &'static str,
    /// Why ustack differs.
    pub why: &'static str,
}

impl Intended {
    /// Whether `o` is this difference.
    pub fn matches(&self, o: &Observed) -> bool {
        self.aspect == o.aspect && self.linux == o.linux && self.ustack == o.ustack
    }
}

/// Every intended difference the fixtures show. Each row is asserted by
/// `tests/linux_captures.rs` (it must be observed, and nothing else may be).
pub const INTENDED: &[Intended] = &[
    Intended {
        aspect: "SYN options",
        linux: "mss,sackOK,TS,nop,wscale",
        ustack: "mss,wscale,sackOK,eol",
        why: "smoltcp writes MSS, window scale and SACK-permitted in its own order and pads with EOL; \
              ustack does not switch on smoltcp's TCP timestamps (no TSval generator), so it offers none",
    },
    Intended {
        aspect: "SYN-ACK options",
        linux: "mss,sackOK,TS,nop,wscale",
        ustack: "mss,wscale,sackOK,eol",
        why: "as for the SYN: the client offered timestamps, and ustack, without them, does not agree to them",
    },
    Intended {
        aspect: "timestamps on data",
        linux: "on",
        ustack: "off",
        why: "follows from the handshake: no side uses timestamps that were not agreed (RFC 7323)",
    },
    Intended {
        aspect: "SYN window (IPv4)",
        linux: "64240",
        ustack: "65535",
        why: "Linux offers a whole number of segments of its initial buffer (44 x 1460); smoltcp offers its \
              buffer (64 KiB), capped at 65535 because a SYN's window is never scaled",
    },
    Intended { aspect: "SYN window (IPv6)", linux: "64800", ustack: "65535", why: "as for IPv4 (45 x 1440)" },
    Intended {
        aspect: "SYN-ACK window (IPv4)",
        linux: "65160",
        ustack: "65535",
        why: "Linux: 45 segments of 1448 bytes (its MSS less the timestamps option); smoltcp: its buffer, capped",
    },
    Intended { aspect: "SYN-ACK window (IPv6)", linux: "64260", ustack: "65535", why: "as for IPv4 (45 x 1428)" },
    Intended {
        aspect: "SYN window scale",
        linux: "10",
        ustack: "7",
        why: "each side picks the shift its largest receive window needs: Linux's is net.ipv4.tcp_rmem's \
              maximum (32 MiB on the capturing host: 10; 7 with the default 6 MiB), ustack's its \
              tcp_receive_max (6 MiB: 7)",
    },
    Intended { aspect: "SYN-ACK window scale", linux: "10", ustack: "7", why: "as for the SYN" },
    Intended {
        aspect: "IPv6 flow label",
        linux: "set",
        ustack: "zero",
        why: "Linux labels each connection (net.ipv6.auto_flowlabels, RFC 6437); smoltcp sends 0, which \
              RFC 8200 allows",
    },
];

/// Splits observations into the intended ones (as listed) and the rest.
pub fn classify(observed: &[Observed]) -> (Vec<&'static Intended>, Vec<Observed>) {
    let mut listed: Vec<&'static Intended> = Vec::new();
    let mut unlisted = Vec::new();
    for o in observed {
        match INTENDED.iter().find(|i| i.matches(o)) {
            Some(i) => {
                if !listed.iter().any(|l| std::ptr::eq(*l, i)) {
                    listed.push(i);
                }
            }
            None => unlisted.push(o.clone()),
        }
    }
    (listed, unlisted)
}
