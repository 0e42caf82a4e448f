# Two threads on one ustack socket: one blocks in recv() while the other sends on the same
# socket; the kernel's echo of what was sent wakes the first. argv = HOST PORT.
import socket
import sys
import threading

s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
got = []
reader = threading.Thread(target=lambda: got.append(s.recv(100)))
reader.start()
# The reader is (very likely) blocked in recv() by now; either way it must get the echo.
reader.join(0.3)
print("reader blocked:", reader.is_alive(), flush=True)
s.sendall(b"ping from the other thread")
reader.join(10)
print("reader got:", got[0].decode() if got else "nothing", flush=True)
s.close()
