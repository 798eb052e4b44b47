#!/usr/bin/env python3
"""Generate a platform of N tiny services in 9 phases, shaped after a 50-service deployment runbook.

The phases and service names follow the runbook's startup order: core infrastructure (PostgreSQL,
NATS, caches and stores), the API gateway, core platform services, intelligence and analysis,
communication and IoT, business and support, AI and advisory, monitoring, demo. The full shape has
53 services; N services keep every phase (at least one service each, N >= 9) and spread the rest in
proportion to the runbook's phase sizes.

Every service runs from the lab's images, nothing is built or pulled:
  - `postgres` and (from N = 25 on) `postgres-iot`: vpsops-lab/postgres:15 with a named volume and
    a pg_isready healthcheck; the password comes from SCALE_DB_PASSWORD in the environment (.env);
  - `nats`: vpsops-lab/nats:2.15 with JetStream on a named volume;
  - every other service: busybox httpd (the static busybox of the NATS image) answering
    /healthz with {"service": NAME, "status": "ok"}, `init: true` so stops are immediate.
Healthchecks run every `interval` seconds (default 4; at 1 s fifty of them keep two cores busy).
The first HTTP service of each phase is published on 127.0.0.1:<port_base + phase index> and the
phase's check asks it for {"status": "ok"}.

    python bench/scale_stack.py DIR [--services 50] [--port-base 29500] [--interval 4]

writes DIR/docker-compose.<NN>-<phase>.yml (one file per phase) and prints the phases as JSON
(the `phases` list of vpsops_stack). Used by bench/scale_deploy.py and tests/integration/test_scale.py.
"""

import argparse
import json
import os
import sys

HTTP_IMAGE = "vpsops-lab/nats:2.15"
POSTGRES_IMAGE = "vpsops-lab/postgres:15"
NATS_IMAGE = "vpsops-lab/nats:2.15"

# (phase, services in the runbook's order); kinds other than http are named in KINDS.
SHAPE = [
    ("infrastructure", ["postgres", "nats", "postgres-iot", "redis", "pgbouncer", "mqtt", "qdrant", "etcd",
                        "minio", "milvus", "ollama"]),
    ("gateway", ["kong", "provider-config"]),
    ("core", ["field-management-service", "marketplace-service", "research-core", "field-ops",
              "weather-service", "advisory-service", "weather-core"]),
    ("intelligence", ["yield-prediction", "lai-estimation", "crop-growth-model", "vegetation-analysis-service",
                      "crop-intelligence-service", "ndvi-engine", "disaster-assessment", "indicators-service"]),
    ("communication", ["chat-service", "iot-service", "community-chat", "notification-service", "ws-gateway",
                       "iot-gateway", "field-chat"]),
    ("business", ["billing-core", "equipment-service", "field-intelligence", "task-service",
                  "inventory-service", "virtual-sensors", "irrigation-smart"]),
    ("ai", ["ai-advisor", "agro-advisor", "alert-service", "crop-health", "crop-health-ai",
            "astronomical-calendar", "yield-prediction-service"]),
    ("monitoring", ["code-review-service", "agent-registry", "field-service"]),
    ("demo", ["demo-data"]),
]
KINDS = {"postgres": "postgres", "postgres-iot": "postgres", "nats": "nats"}
MAX_SERVICES = sum(len(names) for _, names in SHAPE)


def allocate(total):
    """Services per phase for `total` services: one each, the rest by largest remainder in
    proportion to the runbook's phase sizes."""
    if not len(SHAPE) <= total <= MAX_SERVICES:
        raise ValueError("services must be between %d and %d, got %r" % (len(SHAPE), MAX_SERVICES, total))
    extra = [len(names) - 1 for _, names in SHAPE]
    rest = total - len(SHAPE)
    shares = [rest * e / float(sum(extra)) for e in extra]
    counts = [int(s) for s in shares]
    for index in sorted(range(len(SHAPE)), key=lambda i: -(shares[i] - counts[i]))[:rest - sum(counts)]:
        counts[index] += 1
    return [1 + c for c in counts]


def phases(total):
    """[(phase name, [service names])] for `total` services."""
    return [(name, names[:count]) for (name, names), count in zip(SHAPE, allocate(total))]


def healthcheck(test, interval, retries=5):
    # Failures in the first minute do not count (a fresh database volume on a busy machine can take
    # longer than the retries to initialize); the first success still counts at once.
    return {"test": test, "interval": "%ds" % interval, "timeout": "3s", "retries": retries, "start_period": "60s"}


def service(name, interval):
    kind = KINDS.get(name, "http")
    if kind == "postgres":
        return {
            "image": POSTGRES_IMAGE,
            "environment": {"POSTGRES_USER": "scale", "POSTGRES_DB": name.replace("-", "_"),
                            "POSTGRES_PASSWORD": "${SCALE_DB_PASSWORD:?SCALE_DB_PASSWORD must be set}"},
            "volumes": ["%s-data:/var/lib/postgresql/data" % name],
            "healthcheck": healthcheck(["CMD-SHELL", 'pg_isready -h 127.0.0.1 -U scale -d "$$POSTGRES_DB"'],
                                       interval, retries=10),
            "restart": "unless-stopped",
            "labels": {"vpsops.bench": "scale"},
        }
    if kind == "nats":
        return {
            "image": NATS_IMAGE,
            "command": ["-js", "-m", "8222", "-sd", "/data", "-n", "scale-nats"],
            "volumes": ["nats-data:/data"],
            "healthcheck": healthcheck(["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null",
                                        "http://127.0.0.1:8222/healthz?js-enabled-only=true"], interval),
            "restart": "unless-stopped",
            "labels": {"vpsops.bench": "scale"},
        }
    body = json.dumps({"service": name, "status": "ok"})
    script = ("/bin/busybox mkdir -p /www && echo '%s' > /www/healthz && exec /bin/busybox httpd -f -p 8080 -h /www"
              % body)
    return {
        "image": "${SCALE_HTTP_IMAGE:-%s}" % HTTP_IMAGE,
        "init": True,
        "entrypoint": ["/bin/busybox", "sh", "-c", script],
        "environment": {"SERVICE_NAME": name},
        "healthcheck": healthcheck(["CMD", "/bin/busybox", "wget", "-q", "-O", "/dev/null",
                                    "http://127.0.0.1:8080/healthz"], interval, retries=3),
        "restart": "unless-stopped",
        "labels": {"vpsops.bench": "scale"},
    }


def write(directory, total=50, port_base=29500, interval=4):
    """Write one compose file per phase into `directory`; return the stack's phases (name,
    compose_files, checks) and {service: published port}."""
    os.makedirs(directory, exist_ok=True)
    result, published = [], {}
    for index, (phase, names) in enumerate(phases(total)):
        services = {}
        volumes = {}
        checks = []
        for name in names:
            services[name] = service(name, interval)
            for volume in services[name].get("volumes", []):
                volumes[volume.split(":", 1)[0]] = {}
            if KINDS.get(name, "http") == "http" and not checks:
                port = port_base + index
                services[name]["ports"] = ["127.0.0.1:%d:8080" % port]
                published[name] = port
                checks.append({"name": name, "type": "http", "url": "http://127.0.0.1:%d/healthz" % port,
                               "json": {"status": "ok"}})
        document = {"services": services}
        if volumes:
            document["volumes"] = volumes
        file_name = "docker-compose.%02d-%s.yml" % (index + 1, phase)
        with open(os.path.join(directory, file_name), "w") as handle:
            handle.write("# Phase %d of %d of the generated %d-service platform (bench/scale_stack.py).\n"
                         % (index + 1, len(SHAPE), total))
            # JSON is YAML: no YAML library needed, and compose reads it as is.
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.write("\n")
        result.append({"name": phase, "compose_files": [file_name], "checks": checks})
    return result, published


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--port-base", type=int, default=29500)
    parser.add_argument("--interval", type=int, default=4, help="healthcheck interval in seconds")
    args = parser.parse_args()
    try:
        result, _ = write(args.directory, args.services, args.port_base, args.interval)
    except ValueError as exc:
        parser.error("--services: %s" % exc)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
