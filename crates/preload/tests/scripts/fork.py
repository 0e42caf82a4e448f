# fork and exec under `ustack run`: argv = HOST PORT (a kernel echo server).
# A forked child cannot use its parent's ustack sockets, nor open new ones: each call fails
# (EOPNOTSUPP) and says why on stderr. A program the parent runs after opening a socket
# has no stack either (the TUN is the parent's). The parent's socket is unharmed.
import errno
import os
import socket
import subprocess
import sys

s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
pid = os.fork()
if pid == 0:
    try:
        s.send(b"from the child")
        print("child send: sent", flush=True)
    except OSError as e:
        print("child send:", errno.errorcode[e.errno], flush=True)
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        print("child socket: made", flush=True)
    except OSError as e:
        print("child socket:", errno.errorcode[e.errno], flush=True)
    s.close()
    os._exit(0)
os.waitpid(pid, 0)
child = subprocess.run(
    [sys.executable, "-c", "import socket; socket.socket()"], capture_output=True, text=True
)
print("exec'd program exit:", child.returncode, flush=True)
print("exec'd program said:", child.stderr.strip().splitlines()[0] if child.stderr else "", flush=True)
s.sendall(b"parent still works")
s.shutdown(socket.SHUT_WR)
reply = b""
while chunk := s.recv(100):
    reply += chunk
print("parent got:", reply.decode(), flush=True)
