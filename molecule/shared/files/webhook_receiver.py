#!/usr/bin/env python3
"""A Slack-compatible webhook on loopback, for the notify role's scenario.

    webhook_receiver.py PORT DIRECTORY LIFETIME

Listens on 127.0.0.1:PORT only. Each POST is appended to DIRECTORY/posts.jsonl as one JSON line
{path, content_type, body} and answered 200 "ok", as Slack does; a POST to a path under /status/NNN/
is answered NNN instead (a webhook that refuses). The process id is in DIRECTORY/receiver.pid; the
receiver stops on SIGTERM, and by itself after LIFETIME seconds.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver(BaseHTTPRequestHandler):
    record = None
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        line = json.dumps({"path": self.path, "content_type": self.headers.get("Content-Type"), "body": body})
        with self.lock, open(self.record, "a") as handle:
            handle.write(line + "\n")
        parts = self.path.split("/")
        status = int(parts[2]) if len(parts) > 2 and parts[1] == "status" and parts[2].isdigit() else 200
        answer = b"ok" if status == 200 else b"refused"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args):
        pass


def main():
    port, directory, lifetime = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    os.makedirs(directory, exist_ok=True)
    Receiver.record = os.path.join(directory, "posts.jsonl")
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_args: stop.set())
    with open(os.path.join(directory, "receiver.pid"), "w") as handle:
        handle.write("%d\n" % os.getpid())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait(lifetime)
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
