# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The outcome of a deploy across its hosts: the waves, the failure budget of each wave, who failed,
who is unreachable, who this run changed and must roll back, and what the audit log, the webhook
and the play's failure say. Plain functions over the per-host state the deploy keeps; the
deploy_outcome action calls them on the controller. Private to this collection.

The waves are those Ansible's `serial` makes of the play's hosts (vpsops_serial, default
[1, '100%']: the canary alone, then the others). The failure budget is vpsops_max_fail_percentage,
read as Ansible reads a play's max_fail_percentage: a wave is over budget when more than that share
of its hosts failed. Unset (null, '' or absent) it is 0: any failed host stops the deploy.
  - within the budget, a host whose deploy fails is rolled back alone and the other hosts go on;
  - beyond it (any wave over budget, counting the hosts that failed their checks or their lock
    before the first wave in the wave they belong to), the later waves are not started and every
    host this run changed is rolled back.

A host's state (every key optional):
  begin     the result of the begin step (release, live, owner; `failed` and `msg` when it failed)
  failed    {task, msg, unreachable}: where and why this host's deploy failed
  touched   true once a phase started changing the host
  promoted  the release this run made live on the host
  unlocked  true when the finish step released the lock (a deploy of one host)
  skipped   true when the host was left alone because the deploy stopped
  end       the result of the end step (rolled_back, marked, lock_released, lock_note, errors)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DEFAULT_SERIAL = [1, "100%"]
# Per host, what happened: the `result` of its audit line, in the order the message lists them.
RESULTS = (
    ("deployed", "deployed"),
    ("failed_rolled_back", "failed and rolled back"),
    ("failed", "failed, nothing rolled back"),
    ("rolled_back", "rolled back because another host failed"),
    ("not_started", "not started"),
    ("unreachable", "unreachable"),
)
EVENTS = {"deployed": "deploy_succeeded", "failed_rolled_back": "deploy_failed", "failed": "deploy_failed",
          "unreachable": "deploy_failed", "rolled_back": "deploy_rolled_back", "not_started": "deploy_skipped"}


class OutcomeError(ValueError):
    """A deploy option is not valid; the message names the variable and what was expected."""


def _blank(value):
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def parse_serial(value, variable="vpsops_serial"):
    """The waves' sizes as Ansible's `serial` takes them: a number of hosts, a percentage ('25%')
    or a list of them, the last repeated. Blank (null, '', absent): [1, '100%']."""
    if _blank(value):
        return list(DEFAULT_SERIAL)
    items = value if isinstance(value, list) else [value]
    sizes = []
    for item in items:
        text = str(item).strip() if isinstance(item, (int, str)) and not isinstance(item, bool) else None
        if text and text.endswith("%") and text[:-1].strip().isdigit() and 1 <= int(text[:-1]) <= 100:
            sizes.append("%d%%" % int(text[:-1]))
        elif text and text.isdigit() and int(text) >= 1:
            sizes.append(int(text))
        else:
            raise OutcomeError("%s must be a number of hosts (1 or more), a percentage of the hosts ('25%%') or a "
                               "list of them such as [1, 5, '100%%'], got %r" % (variable, value))
    return sizes


def parse_max_fail(value, variable="vpsops_max_fail_percentage"):
    """The failure budget: a percentage 0-100 of a wave's hosts (a number, '10' or '10%'); None when
    blank (null, '', absent), which the deploy reads as 0."""
    if _blank(value):
        return None
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip().rstrip("%").strip())
        except ValueError:
            number = None
    # NaN is not within 0..100 either (every comparison with it is false).
    if number is None or not 0 <= number <= 100:
        raise OutcomeError("%s must be a percentage from 0 to 100 (the share of a wave's hosts that may fail "
                           "before the deploy stops and rolls back every host it changed), got %r"
                           % (variable, value))
    return int(number) if float(number).is_integer() else float(number)


def _wave_size(size, total):
    # ansible.utils.helpers.pct_to_int, as PlaybookExecutor._get_serialized_batches uses it.
    if isinstance(size, str) and size.endswith("%"):
        return int(int(size[:-1]) / 100.0 * total) or 1
    return int(size)


def plan_waves(hosts, serial=None):
    """The waves Ansible makes of the play's hosts with this serial: a list of lists of hosts."""
    sizes = parse_serial(serial)
    remaining, waves, index = list(hosts), [], 0
    while remaining:
        size = _wave_size(sizes[index], len(hosts))
        waves.append(remaining[:size])
        remaining = remaining[size:]
        index = min(index + 1, len(sizes) - 1)
    return waves


def over_budget(failed, size, max_fail):
    """Ansible's rule for a batch: more than max_fail percent of its hosts failed."""
    return size > 0 and failed * 100.0 > (max_fail or 0) * size


def _begun(state):
    begin = state.get("begin") or {}
    return bool(begin) and not begin.get("failed") and bool(begin.get("release"))


def failure_of(host, state, reachable):
    """(task, message) of this host's own failure, or None."""
    failed = state.get("failed")
    if isinstance(failed, dict) and failed:
        return failed.get("task") or "?", failed.get("msg") or "failed"
    if isinstance(failed, str) and failed:
        task, _sep, msg = failed.partition(": ")
        return task, msg or "failed"
    begin = state.get("begin") or {}
    if begin.get("failed"):
        return "Begin the deploy", begin.get("msg") or "failed"
    if host not in reachable:
        return "the deploy", "the host became unreachable"
    if not _begun(state) and not state.get("skipped"):
        return "the checks", "the host did not pass the checks or the lock"
    return None


def _unreachable(state, reachable, host):
    failed = state.get("failed")
    return (host not in reachable or bool((state.get("end") or {}).get("host_unreachable"))
            or (isinstance(failed, dict) and bool(failed.get("unreachable"))))


def judge_waves(waves, failures, max_fail):
    """Per wave: its number, hosts, failed hosts and whether it is over the budget."""
    judged = []
    for number, wave in enumerate(waves, 1):
        failed = [h for h in wave if failures.get(h)]
        judged.append(dict(number=number, hosts=list(wave), failed=failed,
                           over=over_budget(len(failed), len(wave), max_fail)))
    return judged


def decide(hosts, reachable, states, serial=None, max_fail=None, batch=None):
    """The decisions across hosts, at the start of a wave (batch: its hosts) or before the end step.

    Per host: `go` (deploy it in this wave: the deploy goes on and the host has not failed),
    `rollback` (its end step rolls it back: it failed, or the deploy stopped, and this run changed
    it and it has a live release to go back to that is not this run's), `end` (its end step is still
    to run) and the reason. Overall: `stop` (a wave is over the budget: no further wave), the waves
    judged, the failed and unreachable hosts."""
    max_fail = parse_max_fail(max_fail)
    failures = dict((h, failure_of(h, states.get(h) or {}, reachable)) for h in hosts)
    failed = [h for h in hosts if failures[h]]
    waves = judge_waves(plan_waves(hosts, serial), failures, max_fail)
    over = [w for w in waves if w["over"]]
    stop = bool(over)
    wave_of = dict((h, w["number"]) for w in waves for h in w["hosts"])
    current = wave_of.get(batch[0]) if batch else None
    decisions = {}
    for host in hosts:
        state = states.get(host) or {}
        begin = state.get("begin") or {}
        live, release = begin.get("live"), begin.get("release")
        changed_here = bool(state.get("touched") or state.get("promoted"))
        roll_back = ((bool(failures[host]) or stop) and changed_here and bool(live) and live != release
                     and _begun(state))
        if failures[host]:
            reason = "%s failed at %s: %s" % (host, failures[host][0], failures[host][1])
        elif stop:
            reason = "%s failed" % ", ".join(failed)
        else:
            reason = ""
        end = _begun(state) and not state.get("end") and not (state.get("unlocked") and not roll_back)
        decisions[host] = dict(rollback=roll_back, reason=reason[:1500], live=live, release=release,
                               reachable=host in reachable, wave=wave_of.get(host),
                               go=not stop and not failures[host], end=end)
    return dict(hosts=decisions, failed_hosts=failed, unreachable=[h for h in hosts if h not in reachable],
                ok=not failed, stop=stop, waves=waves, wave=current, max_fail_percentage=max_fail,
                over_budget=[dict(number=w["number"], failed=w["failed"], size=len(w["hosts"])) for w in over])


def _what_was_done(host, state, decision, others_failed, check_mode, own=None):
    begin = state.get("begin") or {}
    end = _end_of(state)
    live, release = begin.get("live"), begin.get("release")
    if end.get("host_unreachable") or (not decision["reachable"] and _begun(state)):
        return ("unreachable: nothing more could be done there; its lock is left until its TTL runs out or "
                "rollback.yml takes it over, and it may still run release %s: run rollback.yml once it is back"
                % (release or "?"))
    errors = list(end.get("errors") or [])
    rolled = end.get("rolled_back")
    if errors and decision["rollback"]:
        text = ("the automatic rollback to %s failed too (%s); release %s stays pending: once the cause is fixed, "
                "run rollback.yml, which returns to %s" % (live, "; ".join(errors)[:600], release, live))
    elif rolled:
        if state.get("promoted") and not state.get("failed"):
            text = "deployed %s, then rolled back to %s because %s failed" % (state["promoted"], live,
                                                                              ", ".join(others_failed))
        else:
            text = "rolled back to the live release %s, release %s is marked failed" % (live, release)
    elif state.get("touched") and not live and _begun(state) and not check_mode and others_failed:
        text = "there was no live release to roll back to; release %s is marked failed" % (release or "(not recorded)")
    elif not own and (state.get("skipped") or (_begun(state) and not state.get("touched"))):
        text = "not deployed (another host failed)" if others_failed else ""
    else:
        text = ""
    notes = [n for n in (end.get("lock_note"),) if n]
    if errors and not decision["rollback"]:
        notes += errors
    if notes:
        text = (text + "; " if text else "") + "; ".join(notes)
    return text


def _end_of(state):
    end = state.get("end")
    if isinstance(end, dict) and end:
        return end
    return {"lock_released": bool(state.get("unlocked"))}


def _result_of(host, state, decision, own, reachable):
    """What happened to the host, one of RESULTS."""
    end = _end_of(state)
    if own:
        if _unreachable(state, reachable, host):
            return "unreachable"
        return "failed_rolled_back" if end.get("rolled_back") else "failed"
    if end.get("rolled_back") or (decision["rollback"] and end.get("errors")):
        return "rolled_back"
    if state.get("promoted") or (decision["go"] and not state.get("skipped") and _begun(state)):
        return "deployed"
    return "not_started"


def _names(hosts):
    return ", ".join(hosts) if hosts else "none"


def report(stack, hosts, reachable, states, check_mode=False, serial=None, max_fail=None):
    """Per host: what happened (`result`), its event and line; overall: the event, the status, the
    message the play's failure and the webhook carry, and the audit log's lines (one per host)."""
    decided = decide(hosts, reachable, states, serial=serial, max_fail=max_fail)
    failed = decided["failed_hosts"]
    stop = decided["stop"]
    per_host, lines = {}, []
    by_result = dict((code, []) for code, _words in RESULTS)
    for host in hosts:
        state = states.get(host) or {}
        decision = decided["hosts"][host]
        own = failure_of(host, state, reachable)
        others = [h for h in failed if h != host] or failed
        done = _what_was_done(host, state, decision, others if (stop or own) else [], check_mode, own)
        begin = state.get("begin") or {}
        result = _result_of(host, state, decision, own, reachable)
        if check_mode and result == "deployed":
            result_line = "%s: planned release %s (check mode: nothing changed)" % (host, begin.get("release") or "?")
        elif result == "deployed":
            result_line = "%s: release %s is live" % (host, state.get("promoted") or begin.get("release") or "?")
        else:
            result_line = None
        if own:
            line = "%s failed at %s: %s" % (host, own[0], own[1])
            if done:
                line += "; " + done
        elif result_line:
            line = result_line + ("; " + done if done else "")
        else:
            line = "%s: %s" % (host, done or "not deployed (another host failed)")
        by_result[result].append(host)
        per_host[host] = dict(event=EVENTS[result], result=result, line=line, outcome=done or None,
                              release=begin.get("release"), live_before=begin.get("live"), wave=decision["wave"],
                              # The host fails the play when it failed, or when the deploy stopped.
                              fail=bool(own) or stop)
        lines.append(line)
    budget = decided["max_fail_percentage"]
    if not failed:
        event, status = "deploy_succeeded", "ok"
        releases = sorted(set(p["release"] or "?" for p in per_host.values()))
        summary = "Release %s is live on %s." % (", ".join(releases), ", ".join(hosts))
        if check_mode:
            summary = "Check mode: release %s planned on %s; nothing changed." % (", ".join(releases), ", ".join(hosts))
        message = summary
    else:
        body = ". ".join(line.rstrip(".") for line in lines) + "."
        tail = []
        if stop and budget is not None:
            wave = decided["over_budget"][0]
            tail.append("Wave %d of %d had %d failed host(s) of %d, more than vpsops_max_fail_percentage %s %% allows: "
                        "the later waves were not started and every host this run changed was rolled back."
                        % (wave["number"], len(decided["waves"]), len(wave["failed"]), wave["size"], budget))
        elif not stop:
            tail.append("%s failed within vpsops_max_fail_percentage %s %% (no wave had more of its hosts fail): "
                        "each failed host was rolled back alone and the deploy went on."
                        % (_names(failed), budget))
        if len(hosts) > 1:
            tail.append("By host: %s." % "; ".join("%s: %s" % (words, _names(by_result[code]))
                                                   for code, words in RESULTS if by_result[code]))
        if stop:
            event, status = "deploy_failed", "failed"
            message = "Deploy of %s failed. %s" % (stack, body)
        else:
            event, status = "deploy_partial", "partial"
            message = "Deploy of %s partly failed: release live on %d of %d hosts. %s" % (
                stack, len(by_result["deployed"]), len(hosts), body)
        summary = body
        if tail:
            message += " " + " ".join(tail)
            summary += " " + " ".join(tail)
    for entry in per_host.values():
        entry["status"] = status
    audit = [dict(host=host, event=per_host[host]["event"], release=per_host[host]["release"], status=status,
                  data=dict(outcome=per_host[host]["line"], result=per_host[host]["result"],
                            wave=per_host[host]["wave"], live_before=per_host[host]["live_before"],
                            failed_hosts=failed, unreachable=decided["unreachable"]))
             for host in hosts]
    return dict(ok=not failed, failed_hosts=failed, unreachable=decided["unreachable"], hosts=per_host,
                event=event, status=status, summary=summary, message=message, lines=lines, stop=stop,
                results=by_result, waves=decided["waves"], audit=audit)


def started(stack_names, hosts, release_tag=None, phases=None):
    """The deploy_started lines of the audit log, one per host: {host, event, stack, data}."""
    phases = phases or {}
    entries = []
    for host in hosts:
        data = dict(phases=phases.get(host) or [], hosts=list(hosts))
        if not _blank(release_tag):
            data["release_tag"] = release_tag
        entries.append(dict(host=host, event="deploy_started", stack=stack_names.get(host), data=data))
    return entries
