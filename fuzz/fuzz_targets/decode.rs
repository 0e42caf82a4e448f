//! The packet decoder on arbitrary bytes: `decode` as raw IP, `decode_link` under every
//! link type ustack reads from capture files, and both formatters on each result. Any
//! panic is a bug: the decoder promises to explain bad input, never to crash on it.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ustack::packet::{JsonFormatter, Summary, TcpdumpFormatter, TimeFormat, decode, decode_link, linktype, to_json};

const LINKTYPES: [u32; 11] = [
    linktype::NULL,
    linktype::ETHERNET,
    linktype::DLT_RAW_12,
    linktype::DLT_RAW_14,
    linktype::RAW,
    linktype::LOOP,
    linktype::LINUX_SLL,
    linktype::IPV4,
    linktype::IPV6,
    linktype::LINUX_SLL2,
    // One ustack does not know.
    147,
];

fn render(summary: &Summary, ts: Duration) {
    // Relative sequence numbers need a flow's first packet; format twice so the second
    // line is relative to the first.
    let mut tcpdump = TcpdumpFormatter::new();
    let _ = tcpdump.format(ts, summary);
    let _ = tcpdump.format(ts, summary);
    let _ = TcpdumpFormatter::new().absolute(true).time_format(TimeFormat::Relative).format(ts, summary);
    let _ = JsonFormatter::new().format(ts, summary);
    let _ = to_json(ts, summary, None);
    let _ = summary.to_string();
}

fuzz_target!(|data: &[u8]| {
    // Extreme timestamps too: the first 8 bytes, when there are that many.
    let ts = data.get(..8).map_or(Duration::ZERO, |b| {
        let n = u64::from_le_bytes(b.try_into().unwrap_or_default());
        Duration::new(n >> 20, (n & 0xfffff) as u32)
    });
    render(&decode(data), ts);
    for lt in LINKTYPES {
        render(&decode_link(lt, data), ts);
    }
});
