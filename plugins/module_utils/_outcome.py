# -*- coding: utf-8 -*-
# Copyright (c) 2026, vpsops.deploy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The outcome of a deploy across its hosts: who failed, who is unreachable, who this run changed
and must roll back, and what the audit log, the webhook and the play's failure say. Plain
functions over the per-host state the deploy keeps; the deploy_outcome action calls them on the
controller. Private to this collection.

A host's state (every key optional):
  begin     the result of the begin step (release, live, owner; `failed` and `msg` when it failed)
  failed    {task, msg, unreachable}: where and why this host's deploy failed
  touched   true once a phase started changing the host
  promoted  the release this run made live on the host
  skipped   true when the host was left alone because another host failed
  end       the result of the end step (rolled_back, marked, lock_released, lock_note, errors)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


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


def decide(hosts, reachable, states):
    """Per host whether its end step rolls it back, and why. A host is rolled back when any host of
    the run failed (or became unreachable), this run changed it, and it has a live release to go
    back to that is not the release of this run."""
    failures = dict((h, failure_of(h, states.get(h) or {}, reachable)) for h in hosts)
    failed = [h for h in hosts if failures[h]]
    decisions = {}
    for host in hosts:
        state = states.get(host) or {}
        begin = state.get("begin") or {}
        live, release = begin.get("live"), begin.get("release")
        changed_here = bool(state.get("touched") or state.get("promoted"))
        roll_back = bool(failed) and changed_here and bool(live) and live != release and _begun(state)
        if failures[host]:
            reason = "%s failed at %s: %s" % (host, failures[host][0], failures[host][1])
        elif failed:
            reason = "%s failed" % ", ".join(failed)
        else:
            reason = ""
        decisions[host] = dict(rollback=roll_back, reason=reason[:1500], live=live, release=release,
                               reachable=host in reachable)
    return dict(hosts=decisions, failed_hosts=failed, unreachable=[h for h in hosts if h not in reachable],
                ok=not failed)


def _what_was_done(host, state, decision, others_failed, check_mode):
    begin = state.get("begin") or {}
    end = state.get("end") or {}
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
    elif state.get("skipped") or (_begun(state) and not state.get("touched")):
        text = "not deployed (another host failed)" if others_failed else ""
    else:
        text = ""
    notes = [n for n in (end.get("lock_note"),) if n]
    if errors and not decision["rollback"]:
        notes += errors
    if notes:
        text = (text + "; " if text else "") + "; ".join(notes)
    return text


def report(stack, hosts, reachable, states, check_mode=False):
    """Per host: its event, its line; overall: the event, the status and the message the audit log,
    the webhook and the play's failure carry."""
    decided = decide(hosts, reachable, states)
    failed = decided["failed_hosts"]
    per_host, lines = {}, []
    for host in hosts:
        state = states.get(host) or {}
        decision = decided["hosts"][host]
        own = failure_of(host, state, reachable)
        done = _what_was_done(host, state, decision, [h for h in failed if h != host] or failed, check_mode)
        begin = state.get("begin") or {}
        end = state.get("end") or {}
        if own:
            event = "deploy_failed"
            line = "%s failed at %s: %s" % (host, own[0], own[1])
            if done:
                line += "; " + done
        elif end.get("rolled_back") or (decision["rollback"] and end.get("errors")):
            event = "deploy_rolled_back"
            line = "%s: %s" % (host, done)
        elif failed:
            event = "deploy_skipped"
            line = "%s: %s" % (host, done or "not deployed (another host failed)")
        else:
            event = "deploy_succeeded"
            if check_mode:
                line = "%s: planned release %s (check mode: nothing changed)" % (host, begin.get("release") or "?")
            else:
                line = "%s: release %s is live" % (host, state.get("promoted") or begin.get("release") or "?")
            if done:
                line += "; " + done
        per_host[host] = dict(event=event, line=line, outcome=done or None, release=begin.get("release"),
                              live_before=begin.get("live"), status="failed" if failed else "ok")
        lines.append(line)
    if failed:
        message = "Deploy of %s failed. %s." % (stack, ". ".join(l.rstrip(".") for l in lines))
        summary = ". ".join(l.rstrip(".") for l in lines) + "."
    else:
        releases = sorted(set(p["release"] or "?" for p in per_host.values()))
        summary = "Release %s is live on %s." % (", ".join(releases), ", ".join(hosts))
        message = summary
    return dict(ok=not failed, failed_hosts=failed, unreachable=decided["unreachable"], hosts=per_host,
                event="deploy_failed" if failed else "deploy_succeeded", status="failed" if failed else "ok",
                summary=summary, message=message)
