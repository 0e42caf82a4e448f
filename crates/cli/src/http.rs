//! `serve --app http`: a minimal HTTP/1.1 server written on ustack's own socket API. It
//! answers `GET /` with what ustack knows about the very connection asking: its 5-tuple,
//! its handshake timeline and RTT, and the stack's demux table — so that
//! `curl http://10.7.0.2/` from the kernel's side shows the stack at work. It also serves
//! the live view ([`live`](super::live)): `/ui` and the JSON endpoints `/api/...`.
//!
//! One request per connection, answered with `Connection: close`; `serve` gives each
//! connection its own thread. The request's head (request line and headers) is read with
//! a bound and checked as RFC 9112 asks:
//! - more than [`MAX_HEAD`] bytes: 431, or 414 when the request line alone is that long;
//! - anything malformed (no version, a header without a colon, line folding, an HTTP/1.1
//!   request without Host, ...): 400; another HTTP major version: 505;
//! - no complete head within [`REQUEST_TIMEOUT`]: 408.
//!
//! A request body is never read. After the response comes our FIN and a short, bounded
//! drain of whatever the client still sends: closing a socket with unread data sends RST
//! instead of FIN (in Linux, and in ustack), and a RST can destroy the response before the
//! client has read it. Nothing here panics on any input.

use std::fmt::Write as _;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::live::{Live, counters_json, json_num, rows_json};
use ustack::engine::{ConnectionInfo, DemuxTable};
use ustack::packet::json_quote as quote;
use ustack::{Errno, Socket, Stack};

/// The most bytes a request's head may take, request line and headers together.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a client has to send its whole request head, and to take the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// After the response: how long, and how many bytes, to drain before closing.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// A request line in the log is cut to this many characters.
const LOG_LINE: usize = 200;

/// How one connection went, for `serve`'s log.
#[derive(Debug)]
pub struct HttpExchange {
    /// The request line as received (escaped and cut for a log), if one arrived.
    pub request: Option<String>,
    /// The status sent; `None` when the client closed before sending a request.
    pub status: Option<u16>,
    /// An error of the connection itself (a reset, say).
    pub error: Option<Errno>,
}

/// Serves one HTTP exchange on an accepted connection `conn` of `stack`.
pub fn serve(conn: &Socket, stack: &Stack, live: &Live) -> HttpExchange {
    // Positive, so it cannot fail but on a closed socket, which recv() reports anyway.
    // (read_head sets the read timeout itself.)
    let _ = conn.set_write_timeout(Some(REQUEST_TIMEOUT));
    let (response, request) = match read_head(conn) {
        Ok(head) => {
            let line = Some(log_line(&head));
            match parse(&head) {
                Ok(request) => (respond(&request, conn, stack, live), line),
                Err(reject) => (reject, line),
            }
        }
        Err(HeadError::Closed) => return HttpExchange { request: None, status: None, error: None },
        Err(HeadError::Failed(e)) => return HttpExchange { request: None, status: None, error: Some(e) },
        Err(HeadError::Incomplete(head)) => {
            (Response::error(400, "the request ended before its header did (no empty line)"), Some(log_line(&head)))
        }
        Err(HeadError::TooLarge(head)) => (too_large(&head), Some(log_line(&head))),
        Err(HeadError::TimedOut(head)) => (
            Response::error(408, &format!("no complete request within {} s", REQUEST_TIMEOUT.as_secs())),
            (!head.is_empty()).then(|| log_line(&head)),
        ),
    };
    let status = Some(response.status);
    let error = send_all(conn, &response.to_bytes()).err();
    if error.is_none() {
        let _ = conn.shutdown(Shutdown::Write);
        linger(conn);
    }
    HttpExchange { request, status, error }
}

/// Why no request head could be read. The bytes read so far come along for the log.
#[derive(Debug, PartialEq)]
enum HeadError {
    /// End of stream before any byte: a client that connected and left.
    Closed,
    /// End of stream in the middle of the head.
    Incomplete(Vec<u8>),
    /// More than [`MAX_HEAD`] bytes without the empty line that ends a head.
    TooLarge(Vec<u8>),
    /// [`REQUEST_TIMEOUT`] passed.
    TimedOut(Vec<u8>),
    Failed(Errno),
}

/// Reads up to and including the empty line that ends the head, at most [`MAX_HEAD`]
/// bytes (and never more than one byte past them), within [`REQUEST_TIMEOUT`] in all.
/// Returns the head without that empty line; bytes after it (a body) stay unread, for
/// the drain.
fn read_head(conn: &Socket) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    // Empty lines skipped before the request line: they count towards the limit too.
    let mut skipped = 0;
    loop {
        // RFC 9112 §2.2: empty lines before the request line are ignored.
        let skip = head.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        head.drain(..skip);
        skipped += skip;
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if skipped + head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge(head));
        }
        // A deadline for the whole head, not for each recv(): a client sending a byte at
        // a time cannot hold the connection's thread for longer.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return Err(HeadError::TimedOut(head));
        }
        let room = (MAX_HEAD + 1 - skipped - head.len()).min(buf.len());
        match conn.recv(&mut buf[..room]) {
            Ok(0) if head.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Incomplete(head)),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN) => return Err(HeadError::TimedOut(head)),
            Err(e) => return Err(HeadError::Failed(e)),
        }
    }
}

/// Where the head ends: at the `\n` of its last line, the first `\n` followed by the
/// empty line, `\r\n` or `\n` (RFC 9112 lets a recipient take a bare LF as a line end).
/// What comes before it is the request line and the header lines.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.iter().enumerate().find_map(|(i, &b)| {
        let rest = &bytes[i + 1..];
        (b == b'\n' && (rest.starts_with(b"\r\n") || rest.starts_with(b"\n"))).then_some(i)
    })
}

/// 414 when even the request line did not end within the limit, else 431.
fn too_large(head: &[u8]) -> Response {
    if head.contains(&b'\n') {
        Response::error(431, &format!("the request's header is over {MAX_HEAD} bytes"))
    } else {
        Response::error(414, &format!("the request line is over {MAX_HEAD} bytes"))
    }
}

/// The first line of what arrived, escaped and cut, for a log line.
fn log_line(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut text: String = line.escape_ascii().to_string();
    if text.len() > LOG_LINE {
        let cut = (0..=LOG_LINE).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// A parsed request head.
#[derive(Debug, PartialEq)]
struct Request {
    method: String,
    target: String,
    /// The minor version of HTTP/1.x.
    minor: u8,
    /// Header fields in order; names as sent (compare them case-insensitively).
    headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name`, if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The target's path, without query: origin-form `/x?y` and absolute-form
    /// `http://host/x?y` both give `/x`.
    fn path(&self) -> &str {
        let target = self.target.as_str();
        let path = match target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => target,
        };
        path.split(['?', '#']).next().unwrap_or(path)
    }
}

/// RFC 9110 `tchar`: what method and header names are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a request head (without its empty line). `Err` is the response to send.
fn parse(head: &[u8]) -> Result<Request, Response> {
    let bad = |why: &str| Response::error(400, why);
    let text = std::str::from_utf8(head).map_err(|_| bad("the request is not UTF-8 text"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad("the request line is not METHOD TARGET HTTP/1.1, separated by single spaces"));
    };
    if !is_token(method) {
        return Err(bad("the method is not a token"));
    }
    if target.is_empty() || target.bytes().any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80) {
        return Err(bad("the request target is empty or has control characters"));
    }
    let Some((major, minor)) = version
        .strip_prefix("HTTP/")
        .and_then(|v| v.split_once('.'))
        .filter(|(ma, mi)| ma.len() == 1 && mi.len() == 1)
        .and_then(|(ma, mi)| Some((ma.parse::<u8>().ok()?, mi.parse::<u8>().ok()?)))
    else {
        return Err(bad("the version is not HTTP/x.y"));
    };
    if major != 1 {
        return Err(Response::error(505, "this server speaks HTTP/1.0 and HTTP/1.1"));
    }
    let mut headers = Vec::new();
    for field in lines {
        if field.starts_with([' ', '\t']) {
            return Err(bad("obsolete line folding in the header"));
        }
        let Some((name, value)) = field.split_once(':') else {
            return Err(bad("a header line without a colon"));
        };
        if !is_token(name) {
            return Err(bad("a header name that is not a token (no space may precede the colon)"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(bad("a header value with control characters"));
        }
        headers.push((name.to_string(), value.to_string()));
    }
    let request = Request { method: method.to_string(), target: target.to_string(), minor, headers };
    // RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host header.
    let hosts = request.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("host")).count();
    if hosts > 1 || (hosts == 0 && minor >= 1) {
        return Err(bad("an HTTP/1.1 request needs exactly one Host header"));
    }
    Ok(request)
}

/// Whether the client's Accept header prefers `application/json` to plain text: JSON
/// when it lists `application/json` with a q-value above 0 and at least that of
/// `text/plain`, `text/*` and `*/*`.
fn wants_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let (mut json, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut params = range.split(';');
        let media = params.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(1.0);
        match media.as_str() {
            "application/json" => json = json.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    json > 0.0 && json >= text
}

/// Answers a well-formed request.
fn respond(request: &Request, conn: &Socket, stack: &Stack, live: &Live) -> Response {
    let path = request.path();
    let live_page = live.page(path);
    if path != "/" && live_page.is_none() {
        return Response::error(404, &format!("nothing at {}; try / or /ui", path.escape_debug()));
    }
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut response = Response::error(405, &format!("{} is not served here; try GET", request.method));
            response.allow = true;
            return response;
        }
    };
    if let Some((content_type, body)) = live_page {
        return Response { status: 200, content_type, body, allow: false, vary: false, head_only };
    }
    let info = conn.connection_info();
    let table = stack.demux_table();
    let (content_type, body) = if wants_json(request.header("accept")) {
        ("application/json", page_json(info.as_ref(), &table))
    } else {
        ("text/plain; charset=utf-8", page_text(info.as_ref(), &table))
    };
    Response { status: 200, content_type, body, allow: false, vary: true, head_only }
}

/// The page, as text: the 5-tuple, the timeline and RTT, the demux table.
fn page_text(info: Option<&ConnectionInfo>, table: &DemuxTable) -> String {
    let mut page = String::from("ustack: what the stack knows about the connection that asked.\n\n");
    match info {
        Some(info) => {
            let t = info.tuple;
            let _ = writeln!(page, "Your connection, by its 5-tuple (protocol, two addresses, two ports):");
            let _ = writeln!(page, "  tcp  {} (ustack)  <->  {} (you)\n", t.local, t.remote);
            let _ = writeln!(page, "Its handshake, each state with milliseconds since your SYN arrived:");
            for (ms, state) in &info.timeline {
                let _ = writeln!(page, "  {ms:>10.3}  {state}");
            }
            match info.handshake_rtt_ms {
                Some(rtt) => {
                    let _ = writeln!(page, "Handshake RTT: {rtt:.3} ms (from ustack's SYN-ACK to your ACK)");
                }
                None => page.push_str("Handshake RTT: not measured\n"),
            }
        }
        None => page.push_str("ustack has no record of this connection any more (it was reset or closed).\n"),
    }
    let _ = writeln!(page, "\nThe demux table: every arriving packet is matched against it by its 5-tuple.");
    let _ = writeln!(page, "{table}");
    page
}

/// The page, as JSON. Written by hand, as `packet::to_json` is: the schema is small and
/// fixed, and only strings need escaping.
fn page_json(info: Option<&ConnectionInfo>, table: &DemuxTable) -> String {
    let mut j = String::from("{");
    match info {
        Some(info) => {
            let t = info.tuple;
            let _ = write!(
                j,
                "\"connection\":{{\"proto\":\"tcp\",\"local\":{},\"remote\":{}}},",
                quote(&t.local.to_string()),
                quote(&t.remote.to_string())
            );
            let steps: Vec<String> = info
                .timeline
                .iter()
                .map(|(ms, state)| format!("{{\"ms\":{},\"state\":{}}}", json_num(*ms), quote(state)))
                .collect();
            let _ = write!(j, "\"timeline\":[{}],", steps.join(","));
            let rtt = info.handshake_rtt_ms.map_or("null".to_string(), json_num);
            let _ = write!(j, "\"handshake_rtt_ms\":{rtt},");
        }
        None => j.push_str("\"connection\":null,\"timeline\":[],\"handshake_rtt_ms\":null,"),
    }
    let _ = write!(j, "\"demux\":{{\"rows\":{},\"counters\":{}}}}}", rows_json(table), counters_json(&table.counters));
    j.push('\n');
    j
}

/// A response, always with `Connection: close`.
#[derive(Debug, PartialEq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    /// Send `Allow: GET, HEAD` (with 405).
    allow: bool,
    /// Send `Vary: Accept` (the body depends on it).
    vary: bool,
    /// HEAD: the headers of the GET response, without its body.
    head_only: bool,
}

impl Response {
    /// An error response whose body says what went wrong.
    fn error(status: u16, why: &str) -> Response {
        let body = format!("{status} {}: {why}\n", reason(status));
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            allow: false,
            vary: false,
            head_only: false,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: ustack\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        if self.vary {
            head.push_str("Vary: Accept\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn send_all(conn: &Socket, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        let n = conn.send(bytes)?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Reads and drops what the client still sends, until it closes, for at most [`LINGER`]
/// and [`LINGER_BYTES`]; see the [module docs](self).
fn linger(conn: &Socket) {
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match conn.recv(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(head: &str) -> u16 {
        match parse(head.as_bytes()) {
            Ok(_) => 200,
            Err(response) => response.status,
        }
    }

    #[test]
    fn parses_a_request() {
        let request = parse(b"GET /?x=1 HTTP/1.1\r\nHost: 10.7.0.2\r\nAccept:  application/json ").unwrap();
        assert_eq!((request.method.as_str(), request.path(), request.minor), ("GET", "/", 1));
        assert_eq!(request.header("ACCEPT"), Some("application/json"));
        let absolute = parse(b"GET http://10.7.0.2:8080/x HTTP/1.0").unwrap();
        assert_eq!(absolute.path(), "/x");
        assert_eq!(parse(b"GET / HTTP/1.0\nhost: a").unwrap().header("Host"), Some("a"));
    }

    #[test]
    fn rejects_what_is_malformed() {
        for (head, status) in [
            ("garbage", 400),
            ("GET /", 400),
            ("GET  / HTTP/1.1\r\nHost: a", 400),
            ("GET / HTTP/1.1", 400), // no Host
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400),
            ("GET / HTTP/1.1\r\nHost : a", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: \x01", 400),
            ("GET / HTTP/1.1\r\nnocolon", 400),
            ("G(T / HTTP/1.1\r\nHost: a", 400),
            ("GET / HTTP/11", 400),
            ("GET / HTTP/2.0\r\nHost: a", 505),
            ("GET / HTTP/1.1\r\nHost: a", 200),
        ] {
            assert_eq!(status_of(head), status, "{head:?}");
        }
        assert_eq!(parse(&[0xff, b' ', b'/']).unwrap_err().status, 400);
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nbody"), Some(15));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(14));
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let request = parse(&head[..head_end(head).unwrap()]).unwrap();
        assert_eq!(request.headers, [("Host".to_string(), "a".to_string())]);
        assert_eq!(head_end(b"GET / HTTP/1.0\r\nHost: a\r\n"), None);
        assert_eq!(too_large(b"GET /aaaa").status, 414);
        assert_eq!(too_large(b"GET / HTTP/1.1\r\nX: aaaa").status, 431);
    }

    #[test]
    fn negotiates_json() {
        assert!(wants_json(Some("application/json")));
        assert!(wants_json(Some("text/html, Application/JSON;q=0.9")));
        assert!(wants_json(Some("application/json, */*")));
        assert!(!wants_json(Some("text/plain, application/json;q=0.5")));
        assert!(!wants_json(Some("application/json;q=0")));
        assert!(!wants_json(Some("*/*")));
        assert!(!wants_json(None));
    }

    #[test]
    fn responses_are_well_formed() {
        let mut response = Response::error(405, "no");
        response.allow = true;
        let text = String::from_utf8(response.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(text.contains(&format!("\r\nContent-Length: {}\r\n", response.body.len())), "{text}");
        assert!(text.ends_with("\r\n\r\n405 Method Not Allowed: no\n"), "{text}");
        assert_eq!(quote("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
        assert_eq!(log_line(b"GET /\x1b[31m HTTP/1.1\r\nHost: a"), "GET /\\x1b[31m HTTP/1.1");
        assert!(log_line(&[b'a'; 500]).len() <= LOG_LINE + 3);
    }
}
