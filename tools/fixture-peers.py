#!/usr/bin/env python3
"""Real Linux kernel peers for tools/capture-fixtures: small socket servers and clients.

Each server binds, listens, writes READY_FILE (so the capture script knows it may start the
client), serves, and exits after its connections (or datagrams) are done, or after
--timeout seconds whatever happens. Each client does one scenario and exits. Everything is
bounded in time: every socket has a timeout, every server a deadline.

    fixture-peers.py server APP ADDR PORT READY_FILE [--conns N] [--backlog N] [--accept-delay S]
    fixture-peers.py client SCENARIO ADDR PORT

Server APPs: echo (RFC 862, TCP), discard (RFC 863, TCP), greeting (speaks first, then
closes), http (HTTP/1.1 with a fixed page), udp-echo. Client SCENARIOs: echo, refused,
greeting, http, half-close, bulk, bulk-echo, several, backlog, ipv6 (= echo), udp-echo,
udp-closed, fragments.

The byte streams are fixed (no times, no random bytes), so a capture made again carries
the same payloads; only sequence numbers, ports and timestamps change.
"""

import http.client
import http.server
import socket
import sys
import threading
import time

TIMEOUT = 10.0  # seconds any socket operation may take
BULK = 1024 * 1024  # bytes of the bulk transfer
GREETING = b"ustack fixture: the server speaks first, then closes\r\n"
PAGE = b"<!doctype html><title>ustack fixture</title><p>Hello from the Linux kernel's peer.</p>\n"


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def recv_all(sock):
    """Reads until EOF; returns the bytes."""
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def recv_exactly(sock, n):
    got = b""
    while len(got) < n:
        data = sock.recv(n - len(got))
        if not data:
            raise EOFError(f"EOF after {len(got)} of {n} bytes")
        got += data
    return got


# ---- servers ----


def serve_echo(conn):
    """Echo until the client's FIN, then close: our FIN follows the last echoed byte."""
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    conn.close()


def serve_discard(conn):
    recv_all(conn)
    conn.close()


def serve_greeting(conn):
    conn.sendall(GREETING)
    conn.close()


class PageHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # persistent connections: the client closes first

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass

    def version_string(self):
        return "fixture-peers"  # instead of Python's version, which changes


def serve_http(conn, peer):
    conn.settimeout(TIMEOUT)
    PageHandler(conn, peer, None)
    conn.close()


def tcp_server(app, addr, port, ready, conns, backlog, accept_delay, deadline):
    sock = socket.socket(family(addr), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(backlog)
    open(ready, "w").close()
    # A server that does not accept for a while: its accept queue fills.
    time.sleep(accept_delay)
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    threads = []
    for _ in range(conns):
        conn, peer = sock.accept()
        conn.settimeout(TIMEOUT)
        if app == "http":
            t = threading.Thread(target=serve_http, args=(conn, peer))
        else:
            target = {"echo": serve_echo, "discard": serve_discard, "greeting": serve_greeting}[app]
            t = threading.Thread(target=target, args=(conn,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(TIMEOUT)
    sock.close()


def udp_server(addr, port, ready, datagrams, deadline):
    sock = socket.socket(family(addr), socket.SOCK_DGRAM)
    sock.bind((addr, port))
    open(ready, "w").close()
    for _ in range(datagrams):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)
    sock.close()


# ---- clients ----


def connect(addr, port):
    sock = socket.create_connection((addr, port), timeout=TIMEOUT)
    return sock


def client_echo(addr, port, lines=(b"hello, kernel\n", b"second line\n")):
    sock = connect(addr, port)
    for line in lines:
        sock.sendall(line)
        recv_exactly(sock, len(line))
    sock.close()  # client-initiated close


def client_refused(addr, port):
    try:
        connect(addr, port)
    except ConnectionRefusedError:
        return
    raise SystemExit("connect succeeded: something listens on the closed port")


def client_greeting(addr, port):
    sock = connect(addr, port)
    got = recv_all(sock)  # the server's FIN comes first
    assert got == GREETING, got
    sock.close()


def client_http(addr, port):
    conn = http.client.HTTPConnection(addr, port, timeout=TIMEOUT)
    conn.request("GET", "/")
    body = conn.getresponse().read()
    assert body == PAGE, body
    conn.close()  # HTTP/1.1 keeps the connection: the client closes first


def client_half_close(addr, port):
    sock = connect(addr, port)
    request = b"a request, then shutdown(SHUT_WR): the server still answers\n"
    sock.sendall(request)
    sock.shutdown(socket.SHUT_WR)
    got = recv_all(sock)
    assert got == request, got
    sock.close()


def bulk_bytes():
    pattern = bytes(range(256))
    return (pattern * (BULK // len(pattern) + 1))[:BULK]


def client_bulk(addr, port):
    sock = connect(addr, port)
    sock.sendall(bulk_bytes())
    sock.shutdown(socket.SHUT_WR)
    recv_all(sock)  # the discard server's FIN
    sock.close()


def client_bulk_echo(addr, port):
    """1 MiB to an echo server while reading the echo on another thread (sending all
    first would deadlock once both directions' buffers are full), then SHUT_WR and read
    to EOF: a bulk transfer each way at once."""
    sock = connect(addr, port)
    data = bulk_bytes()
    got = []
    reader = threading.Thread(target=lambda: got.append(recv_all(sock)))
    reader.start()
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    reader.join(3 * TIMEOUT)
    assert got and got[0] == data, f"echo differs ({len(got[0]) if got else 'no'} bytes)"
    sock.close()


def client_several(addr, port, clients=3):
    """Several connections to one listener at once: all connect, then each sends in turn
    (interleaved), then all close."""
    socks = [connect(addr, port) for _ in range(clients)]
    for round_ in range(2):
        for i, sock in enumerate(socks):
            line = f"client {i + 1}, line {round_ + 1}\n".encode()
            sock.sendall(line)
        for i, sock in enumerate(socks):
            line = f"client {i + 1}, line {round_ + 1}\n".encode()
            assert recv_exactly(sock, len(line)) == line
    for sock in socks:
        sock.close()


def client_backlog(addr, port, clients=4, stagger=0.05):
    """Clients started 50 ms apart against a listener with backlog 1 that does not accept
    yet: the first two complete the handshake, the others' SYNs are dropped and
    retransmitted until the server accepts."""
    errors = []

    def one(i):
        try:
            line = f"client {i + 1}\n".encode()
            sock = connect(addr, port)
            sock.sendall(line)
            assert recv_exactly(sock, len(line)) == line
            sock.close()
        except Exception as e:  # reported below, so the script fails
            errors.append(f"client {i + 1}: {e!r}")

    threads = []
    for i in range(clients):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(stagger)
    for t in threads:
        t.join(3 * TIMEOUT)
    if errors:
        raise SystemExit("; ".join(errors))


def client_udp_echo(addr, port):
    sock = socket.socket(family(addr), socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    for payload in (b"first datagram", b"second datagram, a little longer", b"3"):
        sock.sendto(payload, (addr, port))
        data, _ = sock.recvfrom(65536)
        assert data == payload, data
    sock.close()


def client_fragments(addr, port):
    """One 3000-byte datagram (fragmented on a 1500-byte link) echoed back whole."""
    sock = socket.socket(family(addr), socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    payload = bytes(i % 251 for i in range(3000))
    sock.sendto(payload, (addr, port))
    data, _ = sock.recvfrom(65536)
    assert data == payload, len(data)
    sock.close()


def client_udp_closed(addr, port):
    sock = socket.socket(family(addr), socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    sock.connect((addr, port))  # connected: the ICMP error comes back as ECONNREFUSED
    sock.send(b"anyone there?")
    try:
        sock.recv(65536)
    except ConnectionRefusedError:
        return
    raise SystemExit("no ICMP port unreachable")


CLIENTS = {
    "echo": client_echo,
    "ipv6": client_echo,
    "refused": client_refused,
    "greeting": client_greeting,
    "http": client_http,
    "half-close": client_half_close,
    "bulk": client_bulk,
    "bulk-echo": client_bulk_echo,
    "several": client_several,
    "backlog": client_backlog,
    "udp-echo": client_udp_echo,
    "udp-closed": client_udp_closed,
    "fragments": client_fragments,
}


def main(argv):
    if len(argv) >= 5 and argv[0] == "server":
        app, addr, port, ready = argv[1], argv[2], int(argv[3]), argv[4]
        opts = dict(zip(argv[5::2], argv[6::2]))
        conns = int(opts.get("--conns", "1"))
        backlog = int(opts.get("--backlog", "128"))
        accept_delay = float(opts.get("--accept-delay", "0"))
        deadline = time.monotonic() + float(opts.get("--timeout", "20"))
        if app == "udp-echo":
            udp_server(addr, port, ready, conns, deadline)
        else:
            tcp_server(app, addr, port, ready, conns, backlog, accept_delay, deadline)
    elif len(argv) == 4 and argv[0] == "client" and argv[1] in CLIENTS:
        CLIENTS[argv[1]](argv[2], int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
