//! Decode: a large capture, made here, read by `ustack inspect`, `tcpdump -nn -r` and
//! `tshark -r`, each writing its lines to /dev/null; packets per second.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// A capture file in a directory of its own, removed (with the directory) when dropped.
pub struct Capture {
    dir: PathBuf,
    path: PathBuf,
    /// Packets in it.
    pub packets: usize,
}

impl Capture {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn size_bytes(&self) -> u64 {
        fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Request/response/ACK rounds per synthetic conversation: with the handshake and the
/// close, about a thousand packets each. Long conversations on purpose: tcpdump keeps
/// every TCP flow it has seen (for relative sequence numbers) in a table that gets slower
/// as flows pile up, and a million packets in 40,000 short conversations ran it at a few
/// thousand packets a second, which would measure that table rather than decoding.
const ROUNDS: u32 = 330;

/// Writes a pcap (LINKTYPE_RAW) of `packets` IPv4 TCP packets into a new directory under
/// the system's temporary directory: one HTTP-like conversation after another, each a
/// handshake, 330 request/response exchanges with ACKs, and a FIN exchange, 10 µs apart.
pub fn write_capture(packets: usize) -> io::Result<Capture> {
    let dir = std::env::temp_dir().join(format!("ustack-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let path = dir.join("bench.pcap");
    let capture = Capture { dir, path, packets };
    let header = PcapHeader {
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let file = BufWriter::with_capacity(1 << 20, File::create(&capture.path)?);
    let mut writer = PcapWriter::with_header(file, header).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(256);
    let request = [b'q'; 48];
    let response = [b'r'; 96];
    let mut written = 0usize;
    let mut conversation = 0u32;
    while written < packets {
        let client = [10, 80, (conversation >> 8) as u8, conversation as u8];
        let server = [10, 81, 0, 1];
        let port = 10_000 + (conversation % 50_000) as u16;
        let (c_isn, s_isn) = (conversation.wrapping_mul(2_654_435_761), conversation.wrapping_mul(40_503));
        let c = |seq: u32| PacketBuilder::ipv4(client, server, 64).tcp(port, 80, c_isn.wrapping_add(seq), 64_240);
        let s = |seq: u32| PacketBuilder::ipv4(server, client, 64).tcp(80, port, s_isn.wrapping_add(seq), 65_160);
        let (mut cs, mut ss) = (1u32, 1u32);
        let mut steps: Vec<(PacketBuilderStep, &[u8])> = vec![
            (c(0).syn(), &[]),
            (s(0).syn().ack(c_isn.wrapping_add(1)), &[]),
            (c(1).ack(s_isn.wrapping_add(1)), &[]),
        ];
        for _ in 0..ROUNDS {
            steps.push((c(cs).psh().ack(s_isn.wrapping_add(ss)), &request));
            cs += request.len() as u32;
            steps.push((s(ss).psh().ack(c_isn.wrapping_add(cs)), &response));
            ss += response.len() as u32;
            steps.push((c(cs).ack(s_isn.wrapping_add(ss)), &[]));
        }
        steps.push((c(cs).fin().ack(s_isn.wrapping_add(ss)), &[]));
        steps.push((s(ss).fin().ack(c_isn.wrapping_add(cs + 1)), &[]));
        steps.push((c(cs + 1).ack(s_isn.wrapping_add(ss + 1)), &[]));
        for (builder, payload) in steps.into_iter().take(packets - written) {
            buf.clear();
            builder.write(&mut buf, payload).map_err(io::Error::other)?;
            let ts = Duration::from_secs(1_700_000_000) + Duration::from_micros(written as u64 * 10);
            writer.write_packet(&PcapPacket::new(ts, buf.len() as u32, &buf)).map_err(io::Error::other)?;
            written += 1;
        }
        conversation = conversation.wrapping_add(1);
    }
    let file = writer.into_writer();
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(capture)
}

type PacketBuilderStep = etherparse::PacketBuilderStep<etherparse::TcpHeader>;

/// A program that reads capture files.
#[derive(Debug, Clone)]
pub enum Decoder {
    /// `ustack inspect FILE`, with this binary.
    Ustack(PathBuf),
    /// `tcpdump -nn -r FILE`.
    Tcpdump,
    /// `tshark -r FILE`.
    Tshark,
}

impl Decoder {
    /// The baseline's name in the table.
    pub fn name(&self) -> &'static str {
        match self {
            Decoder::Ustack(_) => "ustack inspect",
            Decoder::Tcpdump => "tcpdump -nn -r",
            Decoder::Tshark => "tshark -r",
        }
    }

    fn command(&self, file: &Path) -> Command {
        let mut cmd = match self {
            Decoder::Ustack(exe) => {
                let mut cmd = Command::new(exe);
                cmd.arg("inspect");
                cmd
            }
            Decoder::Tcpdump => {
                let mut cmd = Command::new("tcpdump");
                cmd.arg("-nn");
                cmd
            }
            Decoder::Tshark => Command::new("tshark"),
        };
        if !matches!(self, Decoder::Ustack(_)) {
            cmd.arg("-r");
        }
        cmd.arg(file);
        cmd
    }
}

/// Why a decoder was not timed.
#[derive(Debug)]
pub enum NotTimed {
    /// The program is not installed.
    Missing,
    /// It ran and failed, or could not be run.
    Failed(io::Error),
}

/// How long a decoder took.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Wall-clock time, from starting the program to its exit.
    pub wall: Duration,
    /// CPU time it used (user + system), which other load on the machine affects less.
    pub cpu: Duration,
}

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    super::os::cpu_time(libc::RUSAGE_CHILDREN)
}

/// Runs `decoder` on `file` with its output to /dev/null; how long it took. The CPU time
/// assumes no other child of this process exits meanwhile (the bench runs one at a time).
pub fn time(decoder: &Decoder, file: &Path) -> Result<Timing, NotTimed> {
    let null = File::create("/dev/null").map_err(NotTimed::Failed)?;
    let cpu_before = children_cpu();
    let start = Instant::now();
    let out = decoder
        .command(file)
        .stdin(Stdio::null())
        .stdout(Stdio::from(null))
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| if e.kind() == io::ErrorKind::NotFound { NotTimed::Missing } else { NotTimed::Failed(e) })?;
    let timing = Timing { wall: start.elapsed(), cpu: children_cpu().saturating_sub(cpu_before) };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(NotTimed::Failed(io::Error::other(format!(
            "{} exited with {}: {why}",
            decoder.name(),
            out.status
        ))));
    }
    Ok(timing)
}
