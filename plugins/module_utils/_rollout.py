# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Zero-downtime update of replicated Compose services, behind vpsops.deploy.compose_rollout.

The new containers of a service start beside the old ones (`up --no-deps --no-recreate --scale
SERVICE=OLD+N`), are gated on their own state (running, healthy where they have a healthcheck; an
exit or a restart fails at once), and only then are the old ones stopped with the service's stop
timeout and removed. When the gate fails the new containers are removed and the old ones were never
touched. Private to this collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re
import time

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import (
    DockerError, service_image,
)
from ansible_collections.vpsops.deploy.plugins.module_utils._probes import CheckSpecError, run_gate

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
HASH_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = "com.docker.compose.oneoff"
# Containers in these states serve nothing; compose would start them again on a scale-up.
STALE_STATES = ("created", "exited", "dead")
# What `docker stop` waits when neither the service nor the container names a stop timeout.
DEFAULT_STOP_TIMEOUT = 10
PULL_POLICIES = ("always", "missing", "never")
LOG_LINES = 5
DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class RolloutError(Exception):
    """A rollout cannot start or did not finish; `services` holds the per-service results so far."""

    def __init__(self, msg, services=None):
        Exception.__init__(self, msg)
        self.services = services or {}


# ------------------------------------------------------------------------------------------------
# Options and the compose model
# ------------------------------------------------------------------------------------------------

def check_options(services, timeout=120, drain=1.0, wait_without_healthcheck=10.0, pull="missing"):
    """The service names to roll out, in order and without repeats; RolloutError naming the option
    for anything a rollout cannot work with."""
    if not isinstance(services, list) or not services:
        raise RolloutError("services must name at least one service of the compose project, got %r" % (services,))
    bad = [s for s in services if not isinstance(s, str) or not s.strip()]
    if bad:
        raise RolloutError("services must be a list of service names (non-empty strings), got %r" % (services,))
    if timeout is None or timeout < 1:
        raise RolloutError("timeout must be 1 second or more (how long the new containers may take to become "
                           "healthy), got %r" % (timeout,))
    if drain is None or drain < 0:
        raise RolloutError("drain must be 0 seconds or more, got %r" % (drain,))
    if wait_without_healthcheck is None or wait_without_healthcheck < 0:
        raise RolloutError("wait_without_healthcheck must be 0 seconds or more, got %r" % (wait_without_healthcheck,))
    if pull not in PULL_POLICIES:
        raise RolloutError("pull must be one of %s, got %r" % (", ".join(PULL_POLICIES), pull))
    names = []
    for name in services:
        if name not in names:
            names.append(name)
    return names


def parse_duration(value):
    """A compose duration ("1m30s", "500ms", "10s") or a number of seconds -> seconds (float)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative: %r" % (value,))
        return float(value)
    text = str(value or "").strip()
    if not text:
        raise ValueError("empty duration")
    try:
        return parse_duration(float(text))
    except ValueError:
        pass
    total, end = 0.0, 0
    for match in DURATION_RE.finditer(text):
        if match.start() != end:
            break
        total += float(match.group(1)) * DURATION_UNITS[match.group(2)]
        end = match.end()
    if end != len(text) or end == 0:
        raise ValueError("not a duration: %r" % (value,))
    return total


def desired_replicas(model):
    """How many containers compose keeps for a service: deploy.replicas, else scale, else 1."""
    deploy = model.get("deploy") or {}
    for value in (deploy.get("replicas"), model.get("scale")):
        if value is not None:
            return int(value)
    return 1


def unscalable_reason(name, model):
    """Why the old and the new containers of a service cannot run side by side, or None."""
    if model.get("container_name"):
        return ("service %s sets container_name %s: Docker allows one container of that name, so the new "
                "containers cannot start beside the old ones" % (name, model["container_name"]))
    for port in model.get("ports") or []:
        if isinstance(port, dict):
            published = str(port.get("published") or "")
            host_ip = port.get("host_ip") or ""
        else:  # short syntax, should compose ever hand it back unparsed
            parts = str(port).split(":")
            published = parts[-2] if len(parts) >= 2 else ""
            host_ip = parts[0] if len(parts) == 3 else ""
        if published and "-" not in published:
            return ("service %s publishes host port %s%s: two containers cannot bind it at once, so it cannot be "
                    "rolled out beside the old ones; put a proxy in front of it (publish the proxy's port) or "
                    "update it with a plain `docker compose up`"
                    % (name, (host_ip + ":") if host_ip else "", published))
    return None


def stop_timeout(model, containers):
    """Seconds `docker stop` gives the old containers: the service's stop_grace_period, else what
    the containers were created with, else Docker's default."""
    value = model.get("stop_grace_period")
    if value not in (None, ""):
        try:
            return max(int(math.ceil(parse_duration(value))), 0)
        except ValueError:
            pass
    timeouts = [c["stop_timeout"] for c in containers if c.get("stop_timeout") is not None]
    return max(timeouts) if timeouts else DEFAULT_STOP_TIMEOUT


# ------------------------------------------------------------------------------------------------
# Containers
# ------------------------------------------------------------------------------------------------

def container_info(item):
    """One `docker inspect` document -> the facts a rollout judges a container by."""
    config = item.get("Config") or {}
    labels = config.get("Labels") or {}
    state = item.get("State") or {}
    test = (config.get("Healthcheck") or {}).get("Test") or []
    try:
        number = int(labels.get(NUMBER_LABEL) or 0)
    except ValueError:
        number = 0
    return {
        "id": item.get("Id"),
        "name": (item.get("Name") or "").lstrip("/"),
        "service": labels.get(SERVICE_LABEL),
        "number": number,
        "state": state.get("Status"),
        "health": (state.get("Health") or {}).get("Status"),
        "healthcheck": bool(state.get("Health")) or bool(test and test[0] != "NONE"),
        "restarts": int(item.get("RestartCount") or 0),
        "image_id": item.get("Image"),
        "image": config.get("Image"),
        "config_hash": labels.get(HASH_LABEL),
        "stop_timeout": config.get("StopTimeout"),
        "oneoff": labels.get(ONEOFF_LABEL) == "True",
        "created": item.get("Created"),
    }


def service_containers(docker, project, service):
    """The containers of one service of a compose project (one-off `run` containers excluded),
    ordered by container number."""
    ids = docker.container_ids(["%s=%s" % (PROJECT_LABEL, project), "%s=%s" % (SERVICE_LABEL, service)])
    # A container removed between ps and inspect is left out: keep the others.
    found = docker.inspect_containers(ids)
    containers = [container_info(item) for item in found or []]
    return sorted((c for c in containers if not c["oneoff"]), key=lambda c: (c["number"], c["name"]))


def names(containers):
    return [c["name"] for c in containers]


def describe_images(containers):
    """The image reference(s) and ID(s) a set of containers runs: (refs, ids), each a string or None."""
    refs = sorted(set(c["image"] for c in containers if c.get("image")))
    ids = sorted(set(c["image_id"] for c in containers if c.get("image_id")))
    return (", ".join(refs) or None), (", ".join(ids) or None)


def plan_service(name, model, wanted_hash, wanted_image_id, containers):
    """What a rollout does to one service, judged from its containers:

    none     every container runs the wanted config hash and image ID, as many as compose wants
    start    no container runs: plain `up`
    scale    the running ones are up to date, but their number differs or stopped ones lie around
    rollout  some running container is out of date: new ones beside, then the old ones go
    """
    replicas = desired_replicas(model)
    stale = [c for c in containers if c["state"] in STALE_STATES]
    live = [c for c in containers if c["state"] not in STALE_STATES]
    current = [c for c in live if wanted_hash and c["config_hash"] == wanted_hash
               and wanted_image_id and c["image_id"] == wanted_image_id]
    if not live:
        action = "start"
    elif len(current) == len(live):
        action = "none" if len(live) == replicas and not stale else "scale"
    else:
        action = "rollout"
    return {"service": name, "action": action, "replicas": replicas, "old": live, "stale": stale,
            "image": model.get("image"), "wanted_hash": wanted_hash, "wanted_image_id": wanted_image_id}


def describe_plan(plan):
    """One sentence: what the rollout of this service does (or would do, in check mode)."""
    name, action, replicas = plan["service"], plan["action"], plan["replicas"]
    if action == "none":
        return "%s: %d container(s) already run the wanted config and image; nothing to do" % (name, len(plan["old"]))
    stale = (" and remove the stopped container(s) %s" % ", ".join(names(plan["stale"]))) if plan["stale"] else ""
    if action == "start":
        return "%s: no container runs; start %d on %s%s" % (name, replicas, plan["image"], stale)
    if action == "scale":
        return "%s: the running container(s) are up to date; scale to %d%s" % (name, replicas, stale)
    return ("%s: start %d new container(s) on %s beside %s, wait until they are healthy, then stop and remove "
            "the old one(s)%s" % (name, replicas, plan["image"], ", ".join(names(plan["old"])), stale))


# ------------------------------------------------------------------------------------------------
# The rollout
# ------------------------------------------------------------------------------------------------

class Rollout:
    """Rolls out services of one compose project (a _compose.Compose) one after the other."""

    def __init__(self, compose, timeout=120, drain=1.0, wait_without_healthcheck=10.0, pull="missing",
                 sleep=time.sleep, clock=time.monotonic):
        self.compose = compose
        self.docker = compose.docker
        self.timeout = int(timeout)
        self.drain = float(drain)
        self.wait_without_healthcheck = float(wait_without_healthcheck)
        self.pull = pull
        self.sleep = sleep
        self.clock = clock

    # planning --------------------------------------------------------------------------------------

    def plan(self, services):
        """{service: plan} for every service, checked before anything changes."""
        model = (self.compose.config() or {}).get("services") or {}
        unknown = [s for s in services if s not in model]
        if unknown:
            raise RolloutError("services: %s %s not a service of compose project %s (files: %s); its services are %s"
                               % (", ".join(unknown), "is" if len(unknown) == 1 else "are", self.compose.project,
                                  ", ".join(self.compose.files), ", ".join(sorted(model)) or "none"))
        hashes = self.compose.config_hashes(services)
        refs = dict((name, service_image(self.compose.project, name, model[name])) for name in services)
        images = self.docker.images(refs.values())
        plans = {}
        for name in services:
            if name not in hashes:
                raise RolloutError("docker compose config --hash gave no hash for service %s" % name)
            if desired_replicas(model[name]) < 1:
                raise RolloutError("service %s is scaled to 0 replicas: there is nothing to roll out; remove it from "
                                   "services" % name)
            wanted_id = (images.get(refs[name]) or {}).get("id")
            plan = plan_service(name, model[name], hashes[name], wanted_id,
                                service_containers(self.docker, self.compose.project, name))
            plan["image"] = refs[name]
            plan["stop_timeout"] = stop_timeout(model[name], plan["old"])
            if plan["action"] == "rollout":
                reason = unscalable_reason(name, model[name])
                if reason:
                    raise RolloutError(reason)
            plans[name] = plan
        return plans

    # one service -----------------------------------------------------------------------------------

    def result(self, plan):
        image_before, image_id_before = describe_images(plan["old"])
        return {"changed": False, "action": plan["action"], "plan": describe_plan(plan),
                "replicas": plan["replicas"], "old": names(plan["old"]), "new": [],
                "rejected": [], "removed_stopped": names(plan["stale"]),
                "image_before": image_before, "image_id_before": image_id_before,
                "image_after": image_before if plan["action"] == "none" else plan["image"],
                "image_id_after": image_id_before if plan["action"] == "none" else plan["wanted_image_id"],
                "seconds": 0.0, "timing": {}}

    def apply(self, plan, check_mode=False):
        """Roll out one service; return its result or raise RolloutError carrying it."""
        start = self.clock()
        result = self.result(plan)
        if plan["action"] == "none":
            return result
        result["changed"] = True
        if check_mode:
            return result
        try:
            if plan["stale"]:
                self.remove(plan["stale"])
            if plan["action"] == "rollout":
                self.replace(plan, result)
            else:
                self.start(plan, result)
        except DockerError as exc:
            raise RolloutError("rollout of service %s: %s" % (plan["service"], exc), {plan["service"]: result})
        finally:
            result["seconds"] = round(self.clock() - start, 3)
        return result

    def rejected(self, result, new):
        """The result of a service whose new containers were removed again: it runs as before (only
        stopped leftovers may have been removed)."""
        result.update(changed=bool(result["removed_stopped"]), new=[], rejected=names(new),
                      image_after=result["image_before"], image_id_after=result["image_id_before"])

    def up(self, name, scale=None):
        args = ["up", "-d", "--no-deps", "--no-recreate", "--no-build", "--pull", self.pull]
        if scale is not None:
            args += ["--scale", "%s=%d" % (name, scale)]
        # Without --wait: the gate below judges the new containers and fails fast on a crash.
        self.compose.run(args + [name], timeout=self.timeout + 600, what="docker compose up %s" % name)

    def new_containers(self, name, before_ids):
        return [c for c in service_containers(self.docker, self.compose.project, name) if c["id"] not in before_ids]

    def start(self, plan, result):
        """No running container (start) or only up-to-date ones (scale): a plain `up` of the service,
        then the gate on whatever it started."""
        name = plan["service"]
        before_ids = set(c["id"] for c in plan["old"])
        mark = self.clock()
        try:
            self.up(name)
        except DockerError as exc:
            if plan["old"]:
                # up-to-date containers were serving: take away what this `up` added
                new = self.new_containers(name, before_ids)
                self.remove(new, plan["stop_timeout"])
                self.rejected(result, new)
            raise RolloutError("service %s: %s" % (name, exc), {name: result})
        new = self.new_containers(name, before_ids)
        result["timing"]["up"] = round(self.clock() - mark, 3)
        result["new"] = names(new)
        self.gate_or_fail(plan, result, new, remove_new=bool(plan["old"]))
        result["image_after"], result["image_id_after"] = describe_images(
            service_containers(self.docker, self.compose.project, name))

    def replace(self, plan, result):
        name, old = plan["service"], plan["old"]
        before_ids = set(c["id"] for c in old)
        mark = self.clock()
        try:
            self.up(name, scale=len(old) + plan["replicas"])
        except DockerError as exc:
            new = self.new_containers(name, before_ids)
            self.remove(new, plan["stop_timeout"])
            self.rejected(result, new)
            raise RolloutError("rollout of service %s stopped: starting its new containers failed, so %s; the old "
                               "containers %s were not touched. %s"
                               % (name, ("the ones created (%s) were removed" % ", ".join(names(new))) if new
                                  else "none was created", ", ".join(names(old)), exc), {name: result})
        new = self.new_containers(name, before_ids)
        result["timing"]["up"] = round(self.clock() - mark, 3)
        result["new"] = names(new)
        if len(new) != plan["replicas"]:
            self.remove(new, plan["stop_timeout"])
            self.rejected(result, new)
            raise RolloutError("rollout of service %s stopped: compose started %d new container(s) (%s) where %d were "
                               "expected; they were removed and the old containers %s were not touched"
                               % (name, len(new), ", ".join(names(new)) or "none", plan["replicas"],
                                  ", ".join(names(old))), {name: result})
        # The old containers go only once Docker itself calls the new ones healthy: a proxy that
        # follows Docker (Traefik) routes to no container Docker still calls `starting`, and one that
        # follows Docker's DNS has had the new addresses for a healthcheck interval by then.
        self.gate_or_fail(plan, result, new, remove_new=True, docker_verdict=True)
        mark = self.clock()
        if self.drain > 0:
            # Let proxies that re-resolve the service's DNS name see the new containers before the
            # old ones go away.
            self.sleep(self.drain)
        result["timing"]["drain"] = round(self.clock() - mark, 3)
        mark = self.clock()
        self.stop(old, plan["stop_timeout"])
        self.remove(old)
        result["timing"]["stop"] = round(self.clock() - mark, 3)
        after = service_containers(self.docker, self.compose.project, name)
        result["image_after"], result["image_id_after"] = describe_images(after)
        leftover = [c for c in after if c["id"] not in set(n["id"] for n in new)]
        if leftover:
            raise RolloutError("rollout of service %s: the new containers %s are healthy and the old ones were "
                               "removed, but %s also belong to the service now (another process?)"
                               % (name, ", ".join(names(new)), ", ".join(names(leftover))), {name: result})

    def gate_or_fail(self, plan, result, new, remove_new, docker_verdict=False):
        name = plan["service"]
        mark = self.clock()
        ok, message = self.gate(new, docker_verdict)
        result["timing"]["gate"] = round(self.clock() - mark, 3)
        if ok:
            return
        result["logs"] = self.log_tails(new)
        if not remove_new:
            raise RolloutError("service %s had no running container; its new containers %s did not pass the gate "
                               "and are left for inspection (docker logs). %s"
                               % (name, ", ".join(names(new)), message), {name: result})
        self.remove(new, plan["stop_timeout"])
        self.rejected(result, new)
        serving = [c for c in service_containers(self.docker, self.compose.project, name)
                   if c["state"] == "running"]
        raise RolloutError("rollout of service %s failed: its new containers %s (%s) did not pass the gate within %ds, "
                           "so they were removed; the service is as it was, %s running %s. %s"
                           % (name, ", ".join(names(new)), plan["image"], self.timeout,
                              ", ".join(names(serving)) or "no container",
                              describe_images(serving)[0] or "nothing", message), {name: result})

    # Docker ----------------------------------------------------------------------------------------

    def gate(self, containers, docker_verdict=False):
        """(ok, message): every container running, healthy where it has a healthcheck (up for
        wait_without_healthcheck seconds where it has none), no exit and no restart. With
        `docker_verdict`, healthy is Docker's own verdict: the gate does not run the healthcheck of a
        container Docker still calls `starting` to know sooner."""
        if not containers:
            return True, ""

        def judge(specs):
            for spec, container in zip(specs, containers):
                if not container["healthcheck"]:
                    spec["running_for"] = self.wait_without_healthcheck
                if docker_verdict:
                    spec["own_health"] = False

        def new_containers(probes):
            for probe in probes:
                # The containers are new: any restart at all is a crash, even one before the first probe.
                probe.restarts_seen = 0

        try:
            found = run_gate([], names(containers), self.timeout, interval=0.5, max_interval=1.0,
                             docker_cli=self.docker.cli, runner=self.docker.runner,
                             adjust_specs=judge, adjust_probes=new_containers)
        except CheckSpecError as exc:
            return False, str(exc)
        return found.ok, found.message

    def log_tails(self, containers):
        tails = {}
        for container in containers:
            try:
                out, err = self.docker.container_logs(container["id"], tail=LOG_LINES, timeout=30)
            except DockerError:
                continue
            tails[container["name"]] = ((out or "") + (err or "")).strip()[-1000:]
        return tails

    def stop(self, containers, timeout):
        if containers:
            self.docker.run(["stop", "-t", str(int(timeout))] + [c["id"] for c in containers],
                            timeout=int(timeout) + 60, what="docker stop %s" % " ".join(names(containers)))

    def remove(self, containers, stop_timeout=None):
        """Stop (gracefully, when a timeout is given) and remove containers."""
        if not containers:
            return
        if stop_timeout is not None:
            self.stop(containers, stop_timeout)
        self.docker.run(["rm", "-f"] + [c["id"] for c in containers],
                        what="docker rm %s" % " ".join(names(containers)))

    # all services ----------------------------------------------------------------------------------

    def run(self, services, check_mode=False):
        """{service: result}, services in order; RolloutError (carrying the results so far) on the
        first service that fails. Every service is checked before the first one changes."""
        plans = self.plan(services)
        results = {}
        for name in services:
            try:
                results[name] = self.apply(plans[name], check_mode=check_mode)
            except RolloutError as exc:
                results.update(exc.services)
                raise RolloutError(str(exc), results)
        return results
