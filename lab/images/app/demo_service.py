#!/usr/bin/env python3
"""Demo service of the lab platform: the auth service or a module (ar, payments).

Every service answers GET /api/health with {"status": "ok", "service", "release", "instance"}.
A module also keeps its own PostgreSQL (processed_events, failed_events, events_outbox), consumes
one JetStream durable consumer, logs "Subscribed to <subject>", stores each event it processes,
and stores the ones it cannot process in failed_events (the dead-letter table of the platform).
An event whose JSON has "fail": true cannot be processed. POST /api/events puts an event in the
outbox; a publisher sends unpublished outbox rows to JetStream.

The image's baked-in DEMO_BEHAVIOUR makes broken releases for the deploy tests:
  good            healthy, consumes
  never_healthy   /api/health answers 503 forever
  crash_after     healthy, then exits 1 after DEMO_CRASH_AFTER seconds (a crash loop under restart)
  stop_consuming  healthy and subscribed, but never fetches a message: consumer lag grows
"""

import asyncio
import json
import os
import socket
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE = os.environ.get("SERVICE_NAME", "demo")
ROLE = os.environ.get("SERVICE_ROLE", "module")  # auth | module
PORT = int(os.environ.get("PORT", "8080"))
RELEASE = os.environ.get("DEMO_RELEASE", "dev")
BEHAVIOUR = os.environ.get("DEMO_BEHAVIOUR", "good")
CRASH_AFTER = float(os.environ.get("DEMO_CRASH_AFTER", "15"))
NATS_URL = os.environ.get("NATS_URL", "nats://nats:4222")
# "NAME:subject,NAME:subject" streams this service makes sure exist (publisher and consumer side)
STREAMS = os.environ.get("NATS_STREAMS", "")
CONSUME_STREAM = os.environ.get("CONSUME_STREAM", "")
CONSUME_SUBJECT = os.environ.get("CONSUME_SUBJECT", "")
CONSUMER = os.environ.get("CONSUMER_NAME", SERVICE)
PUBLISH_PREFIX = os.environ.get("PUBLISH_PREFIX", "%s.events.%s" % (SERVICE, SERVICE))
MAX_DELIVER = int(os.environ.get("MAX_DELIVER", "3"))
# event type this module emits (through its outbox) for each event it processes, e.g. payment.succeeded
ON_EVENT_EMIT = os.environ.get("ON_EVENT_EMIT", "")

STATE = {"started": time.time(), "db": False, "subscribed": False, "processed": 0, "failed": 0,
         "published": 0, "last_error": None}

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed_events (
    event_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    tenant_id TEXT,
    payload JSONB,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    release TEXT
);
CREATE TABLE IF NOT EXISTS failed_events (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    tenant_id TEXT,
    envelope_json JSONB NOT NULL,
    error TEXT NOT NULL,
    retry_count INTEGER NOT NULL DEFAULT 0,
    failed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS events_outbox (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    payload JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
"""


def log(level, msg):
    print("%s %s [%s %s] %s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), level, SERVICE, RELEASE, msg), flush=True)


def healthy():
    if BEHAVIOUR == "never_healthy":
        return False
    if ROLE == "module":
        return STATE["db"] and STATE["subscribed"]
    return True


# ------------------------------------------------------------------------------------------
# PostgreSQL (connection from the libpq environment: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)
# ------------------------------------------------------------------------------------------
def db_connect():
    import psycopg2  # only modules need it; the healthcheck path stays fast

    while True:
        try:
            conn = psycopg2.connect(connect_timeout=3)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(SCHEMA)
            STATE["db"] = True
            log("INFO", "Connected to database %s" % os.environ.get("PGDATABASE", ""))
            return conn
        except psycopg2.Error as exc:
            STATE["last_error"] = "database: %s" % str(exc).strip()
            log("WARN", "database not ready: %s" % str(exc).strip().splitlines()[0])
            time.sleep(1)


class Store:
    """One connection per thread user; psycopg2 connections are not shared across threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.conn = db_connect()

    def execute(self, sql, args=(), fetch=False):
        with self.lock:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if fetch else cur.rowcount


STORE = {}


# ------------------------------------------------------------------------------------------
# JetStream
# ------------------------------------------------------------------------------------------
def parse_streams(text):
    streams = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, subject = item.partition(":")
        streams.setdefault(name, []).append(subject)
    return streams


def process(store, subject, data):
    """Store one event; raise for an event that cannot be processed."""
    envelope = json.loads(data.decode() or "{}")
    event_id = str(envelope.get("event_id") or uuid.uuid4())
    tenant = envelope.get("tenant_id")
    if envelope.get("fail"):
        raise ValueError("cannot process event %s: %s" % (event_id, envelope.get("reason", "rejected by handler")))
    store.execute(
        "INSERT INTO processed_events (event_id, subject, tenant_id, payload, release) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
        (event_id, subject, tenant, json.dumps(envelope), RELEASE))
    if ON_EVENT_EMIT:
        reply_id = "%s-%s" % (event_id, ON_EVENT_EMIT)
        store.execute(
            "INSERT INTO events_outbox (event_id, subject, payload) VALUES (%s, %s, %s) "
            "ON CONFLICT (event_id) DO NOTHING",
            (reply_id, "%s.%s" % (PUBLISH_PREFIX, ON_EVENT_EMIT),
             json.dumps({"event_id": reply_id, "tenant_id": tenant, "caused_by": event_id})))
    return event_id, envelope, tenant


async def consume(js, store):
    sub = await js.pull_subscribe(CONSUME_SUBJECT, durable=CONSUMER, stream=CONSUME_STREAM)
    STATE["subscribed"] = True
    log("INFO", "Subscribed to %s" % CONSUME_SUBJECT)
    if BEHAVIOUR == "stop_consuming":
        log("INFO", "consumer paused")
        while True:
            await asyncio.sleep(3600)
    import nats.errors

    while True:
        try:
            msgs = await sub.fetch(batch=20, timeout=1)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        for msg in msgs:
            attempt = msg.metadata.num_delivered if msg.metadata else 1
            try:
                event_id, _env, _tenant = process(store, msg.subject, msg.data)
                STATE["processed"] += 1
                log("INFO", "Processed event %s from %s" % (event_id, msg.subject))
                await msg.ack()
            except Exception as exc:  # noqa: BLE001 - every handler failure goes to the DLQ path
                if attempt < MAX_DELIVER:
                    await msg.nak(delay=0.2)
                    continue
                try:
                    envelope = json.loads(msg.data.decode() or "{}")
                except ValueError:
                    envelope = {"raw": msg.data.decode(errors="replace")}
                event_id = str(envelope.get("event_id") or "unknown")
                store.execute(
                    "INSERT INTO failed_events (event_id, subject, tenant_id, envelope_json, error, retry_count) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (event_id, msg.subject, envelope.get("tenant_id"), json.dumps(envelope), str(exc), attempt))
                STATE["failed"] += 1
                log("ERROR", "Event %s moved to failed_events after %d attempts: %s" % (event_id, attempt, exc))
                await msg.ack()


async def publish_outbox(js, store):
    while True:
        rows = store.execute(
            "SELECT id, event_id, subject, payload FROM events_outbox WHERE published_at IS NULL "
            "ORDER BY id LIMIT 100", fetch=True)
        for row_id, event_id, subject, payload in rows:
            await js.publish(subject, json.dumps(payload).encode(), headers={"Nats-Msg-Id": event_id})
            store.execute("UPDATE events_outbox SET published_at = now() WHERE id = %s", (row_id,))
            STATE["published"] += 1
        if rows:
            log("INFO", "Published %d events to bus" % len(rows))
        await asyncio.sleep(0.5)


async def bus_main(store):
    import nats
    from nats.js.api import StreamConfig

    while True:
        try:
            nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=-1,
                                    name="%s-%s" % (SERVICE, RELEASE))
            break
        except Exception as exc:  # noqa: BLE001 - retried until NATS is up
            STATE["last_error"] = "nats: %s" % exc
            log("WARN", "NATS not ready: %s" % exc)
            await asyncio.sleep(1)
    js = nc.jetstream()
    for name, subjects in parse_streams(STREAMS).items():
        try:
            await js.stream_info(name)
        except Exception:  # noqa: BLE001 - not found: create it
            try:
                await js.add_stream(StreamConfig(name=name, subjects=subjects))
                log("INFO", "Created stream %s for %s" % (name, ", ".join(subjects)))
            except Exception as exc:  # noqa: BLE001 - another service made it first
                log("INFO", "stream %s: %s" % (name, exc))
    tasks = [asyncio.create_task(publish_outbox(js, store))]
    if CONSUME_STREAM:
        tasks.append(asyncio.create_task(consume(js, store)))
    else:
        STATE["subscribed"] = True
    await asyncio.gather(*tasks)


# ------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    server_version = "vpsops-demo"

    def log_message(self, fmt, *args):  # quiet access log
        return

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server API
        if self.path == "/api/health":
            if healthy():
                self.reply(200, {"status": "ok", "service": SERVICE, "release": RELEASE,
                                 "instance": socket.gethostname()})
            else:
                self.reply(503, {"status": "unavailable", "service": SERVICE, "release": RELEASE,
                                 "error": STATE["last_error"] or "not ready"})
        elif self.path == "/api/stats":
            self.reply(200, dict(STATE, service=SERVICE, release=RELEASE, behaviour=BEHAVIOUR))
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802 - http.server API
        if self.path != "/api/events" or "store" not in STORE:
            self.reply(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            event_type = body.pop("type")
        except (ValueError, KeyError):
            self.reply(400, {"error": "expected a JSON object with 'type'"})
            return
        event_id = str(body.get("event_id") or uuid.uuid4())
        body["event_id"] = event_id
        subject = "%s.%s" % (PUBLISH_PREFIX, event_type)
        STORE["store"].execute(
            "INSERT INTO events_outbox (event_id, subject, payload) VALUES (%s, %s, %s) "
            "ON CONFLICT (event_id) DO NOTHING", (event_id, subject, json.dumps(body)))
        self.reply(202, {"event_id": event_id, "subject": subject})


def healthcheck(url):
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            return 0 if resp.status == 200 else 1
    except Exception:  # noqa: BLE001 - any failure is unhealthy
        return 1


def crash_timer():
    time.sleep(CRASH_AFTER)
    log("FATAL", "panic: worker pool exhausted (release %s)" % RELEASE)
    os._exit(1)


def main():
    if "--healthcheck" in sys.argv:
        url = "http://127.0.0.1:%d/api/health" % PORT
        if "--url" in sys.argv:
            url = sys.argv[sys.argv.index("--url") + 1]
        sys.exit(healthcheck(url))
    log("INFO", "starting %s (%s) release %s behaviour %s" % (SERVICE, ROLE, RELEASE, BEHAVIOUR))
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log("INFO", "Server listening on 0.0.0.0:%d" % PORT)
    if BEHAVIOUR == "crash_after":
        threading.Thread(target=crash_timer, daemon=True).start()
    if ROLE == "module":
        STORE["store"] = Store()
        asyncio.run(bus_main(STORE["store"]))
    else:
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
