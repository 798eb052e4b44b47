"""field-api: the service of the fieldops stack that is built on the host.

GET /healthz       200 once the signing key (a compose secret) reads as a PEM key and Redis answers
GET /api/health    {"status": "ok", "version", "model", "key_sha256", "key_lines"}
GET /api/routes    {"routes": [...]}: the route table the gateway configurator published in Redis
GET /api/fields/N  the field N stored in Redis
"""

import hashlib
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY_FILE = "/run/secrets/jwt_private_key"
MODEL_FILE = "/models/current"
with open("/app/VERSION") as handle:
    VERSION = handle.read().strip()


def redis(*args):
    """One Redis command over RESP, logged in with REDIS_PASSWORD; the decoded reply."""
    with socket.create_connection((os.environ.get("REDIS_HOST", "redis"), 6379), timeout=3) as conn:
        stream = conn.makefile("rb")
        commands = [("AUTH", os.environ["REDIS_PASSWORD"])] if os.environ.get("REDIS_PASSWORD") else []
        for command in commands + [args]:
            payload = b"*%d\r\n" % len(command)
            for part in command:
                part = str(part).encode()
                payload += b"$%d\r\n%s\r\n" % (len(part), part)
            conn.sendall(payload)
            reply = read_reply(stream)
        return reply


def read_reply(stream):
    line = stream.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)[:-2]
        return data.decode()
    if kind == b"*":
        return [read_reply(stream) for _index in range(max(int(rest), 0))]
    raise RuntimeError("unexpected reply from Redis: %r" % line[:40])


def signing_key():
    with open(KEY_FILE, "rb") as handle:
        key = handle.read()
    text = key.decode("ascii")
    if not (text.startswith("-----BEGIN ") and text.rstrip().endswith("-----")):
        raise ValueError("%s is not a PEM key" % KEY_FILE)
    return key


def read_model():
    try:
        with open(MODEL_FILE) as handle:
            return handle.read().strip()
    except OSError:
        return None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # no access log
        pass

    def answer(self, status, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        try:
            if self.path == "/healthz":
                signing_key()
                redis("PING")
                return self.answer(200, {"status": "ok"})
            if self.path == "/api/health":
                key = signing_key()
                return self.answer(200, {"status": "ok", "version": VERSION, "model": read_model(),
                                         "key_sha256": hashlib.sha256(key).hexdigest(),
                                         "key_lines": len(key.decode().splitlines())})
            if self.path == "/api/routes":
                return self.answer(200, {"routes": sorted(redis("SMEMBERS", "gateway:routes") or [])})
            if self.path.startswith("/api/fields/"):
                flat = redis("HGETALL", "field:" + self.path.rsplit("/", 1)[-1]) or []
                if not flat:
                    return self.answer(404, {"error": "no such field"})
                return self.answer(200, dict(zip(flat[::2], flat[1::2])))
            return self.answer(404, {"error": "not found"})
        except Exception as exc:  # noqa: BLE001 - any failure is an unhealthy answer
            return self.answer(503, {"status": "error", "error": type(exc).__name__})


if __name__ == "__main__":
    print("field-api %s listening on :8000" % VERSION)
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
