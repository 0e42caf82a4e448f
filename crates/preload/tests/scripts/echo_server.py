# A TCP echo server as people write it: under `ustack run`, its socket is ustack's.
# Serves one connection on port 7 (dual-stack), then says how it went.
import socket
import sys

srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind(("::", 7))
srv.listen(8)
print("listening", flush=True)
conn, peer = srv.accept()
total = 0
while True:
    data = conn.recv(4096)
    if not data:
        break
    total += len(data)
    conn.sendall(data)
conn.close()
srv.close()
print(f"echoed {total} bytes to {peer[0]}", flush=True)
sys.exit(0)
