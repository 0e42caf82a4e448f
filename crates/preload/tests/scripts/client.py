# A TCP and UDP client as people write it: argv = HOST TCP_PORT UDP_PORT.
import socket
import sys

host, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with socket.create_connection((host, tcp_port), timeout=10) as s:
    s.sendall(b"hello over tcp")
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := s.recv(4096):
        reply += chunk
print("tcp reply:", reply.decode(), flush=True)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(10)
u.sendto(b"hello over udp", (host, udp_port))
data, sender = u.recvfrom(2048)
print("udp reply:", data.decode(), "from", sender[0], flush=True)
