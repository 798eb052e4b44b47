"""The demo images' Docker healthcheck: one HTTP GET over a plain socket, exit 0 on a 200.

Run as `python3 -I -S healthcheck.py [PORT [PATH]]`: no site packages and only the socket module,
so a check costs a few milliseconds of CPU even on a loaded host (the service module itself imports
http.server and urllib, which costs ten times more on every check).
"""
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
path = sys.argv[2] if len(sys.argv) > 2 else "/api/health"
try:
    with socket.create_connection(("127.0.0.1", port), timeout=4) as conn:
        conn.sendall(("GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())
        head = conn.recv(64).decode("latin-1")
except OSError:
    sys.exit(1)
sys.exit(0 if head.split(" ")[1:2] == ["200"] else 1)
