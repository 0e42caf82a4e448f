# One event loop over kernel fds and ustack sockets together: argv = MODE UDP_FD, MODE one
# of epoll, epollet (edge-triggered: each fd is read until EAGAIN), poll, select. UDP_FD is a kernel UDP socket the test opened and passed down
# (inherited, so not ustack's); a pipe is the other kernel fd. The ustack side is a TCP
# listener on port 7 and what it accepts. Exits once the pipe, a datagram and a whole TCP
# connection have been served.
import os
import select
import socket
import sys

mode, udp_fd = sys.argv[1], int(sys.argv[2])
udp = socket.socket(fileno=udp_fd)
udp.setblocking(False)
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("0.0.0.0", 7))
lst.listen(4)
lst.setblocking(False)
r, w = os.pipe()
os.write(w, b"pipe-data")
conns = {}
seen = set()


def wait(fds):
    """The readable fds among `fds`, by MODE."""
    if mode in ("epoll", "epollet"):
        ep = wait.ep
        for fd in fds - wait.registered:
            ep.register(fd, select.EPOLLIN | (select.EPOLLET if mode == "epollet" else 0))
        for fd in wait.registered - fds:
            try:
                ep.unregister(fd)
            except OSError:  # closed, and so already gone from the set
                pass
        wait.registered = set(fds)
        return [fd for fd, _ in ep.poll(10)]
    if mode == "poll":
        p = select.poll()
        for fd in fds:
            p.register(fd, select.POLLIN)
        return [fd for fd, _ in p.poll(10000)]
    ready, _, _ = select.select(list(fds), [], [], 10)
    return ready


wait.ep = select.epoll() if mode in ("epoll", "epollet") else None


def drained(call):
    """What `call` gives until it would block (all of it, as edge-triggered epoll needs)."""
    got = []
    while True:
        try:
            got.append(call())
        except BlockingIOError:
            return got
        if got[-1] == b"":  # end of stream: nothing more will come
            return got
wait.registered = set()
print("listening", flush=True)
while seen != {"pipe", "udp", "tcp"}:
    fds = ({r} - {-1}) | {udp.fileno(), lst.fileno()} | set(conns)
    ready = wait(fds)
    if not ready:
        print("timed out waiting", flush=True)
        sys.exit(1)
    for fd in ready:
        if fd == r:
            print("pipe:", os.read(r, 100).decode(), flush=True)
            os.close(r)
            r = -1  # served: out of the set
            seen.add("pipe")
        elif fd == udp.fileno():
            for data, sender in drained(lambda: udp.recvfrom(2048)):
                print("udp:", data.decode(), flush=True)
                udp.sendto(data, sender)
                seen.add("udp")
        elif fd == lst.fileno():
            for conn, peer in drained(lst.accept):
                conn.setblocking(False)
                conns[conn.fileno()] = conn
                print("accepted", flush=True)
        elif fd in conns:
            conn = conns[fd]
            for data in drained(lambda: conn.recv(4096)):
                if data:
                    print("tcp:", data.decode(), flush=True)
                    conn.sendall(data)
                else:
                    print("tcp closed", flush=True)
                    del conns[fd]
                    conn.close()
                    seen.add("tcp")
                    break
print("done", flush=True)
