//! Packets as a person reads them: decoding, tcpdump-style lines and JSON.
//!
//! [`decode`] turns the bytes of a raw IP packet (what ustack's devices carry) into a
//! [`Summary`], the packet's meaning: addresses, protocol, ports, flags, options, and an
//! explanation of whatever could not be decoded. It never panics, whatever the bytes.
//! [`decode_link`] does the same for link-layer frames read from capture files.
//!
//! Two renderings sit on top of a [`Summary`]:
//! - [`TcpdumpFormatter`]: one line per packet exactly as `tcpdump -nn` prints it (or
//!   `tcpdump -nn -S` with [`TcpdumpFormatter::absolute`]), relative sequence numbers
//!   included. The `Display` impl of [`Summary`] gives the same line without timestamp,
//!   with absolute numbers.
//! - [`JsonFormatter`]: one JSON object per packet, with a flow id shared by both
//!   directions of a conversation ([`FlowIds`]).
//!
//! [`Filter`] chooses packets by a tcpdump filter expression (`tcp port 7 and host
//! 10.7.0.1`), evaluated on the [`Summary`].

mod decode;
mod dns;
mod filter;
mod flow;
mod json;
mod link;
mod summary;
mod tcpdump;

pub use decode::decode;
pub use dns::{Dns, DnsData, DnsHeader, DnsOverTcp, DnsQuestion, DnsRecord};
pub use filter::{Filter, FilterError};
pub use flow::{DEFAULT_FLOW_CAPACITY, FlowIds, FlowKey, FragmentFlows};
pub use json::{JsonFormatter, quote as json_quote, to_json};
pub use link::{Arp, LinkHeader, decode_link, linktype};
pub use summary::{
    Echo, ExtHeader, Fragment, Icmp, Ip, IpVersion, Net, Summary, Tcp, TcpFlags, TcpOption, Transport, Udp,
};
pub use tcpdump::{TcpdumpFormatter, TimeFormat};
