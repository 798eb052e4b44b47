"""The pure parts of a deploy phase (vpsops.deploy.compose_phase): what `up` changed, what a dry run
says it would change, which containers the gate judges."""

from ansible_collections.vpsops.deploy.plugins.module_utils._phase import actions_between, dry_run_actions, gated_names


def container(name, cid, service, state="running"):
    return {"name": name, "id": cid, "service": service, "state": state}


def test_actions_name_what_up_created_recreated_started_and_removed():
    before = {"p-db-1": container("p-db-1", "a", "db"),
              "p-api-1": container("p-api-1", "b", "api"),
              "p-worker-1": container("p-worker-1", "c", "worker", state="exited"),
              "p-web-2": container("p-web-2", "d", "web")}
    after = {"p-db-1": container("p-db-1", "a", "db"),
             "p-api-1": container("p-api-1", "b2", "api"),
             "p-worker-1": container("p-worker-1", "c", "worker"),
             "p-new-1": container("p-new-1", "e", "new")}
    assert actions_between(before, after) == [
        {"id": "p-api-1", "status": "Recreated", "service": "api"},
        {"id": "p-new-1", "status": "Created", "service": "new"},
        {"id": "p-worker-1", "status": "Started", "service": "worker"},
        {"id": "p-web-2", "status": "Removed", "service": "web"},
    ]


def test_nothing_changed_means_no_action():
    same = {"p-db-1": container("p-db-1", "a", "db")}
    assert actions_between(same, dict(same)) == []


def test_a_dry_run_names_each_container_once_under_its_own_name():
    text = "\n".join([
        " DRY-RUN MODE -  Container p-db-1  Running",
        " DRY-RUN MODE -  Container p-auth-1  Recreate",
        " DRY-RUN MODE -  Container p-auth-1  Recreated",
        " DRY-RUN MODE -  Container d914e541c223_p-auth-1  Starting",
        " DRY-RUN MODE -  Container p-new-1  Creating",
        " DRY-RUN MODE -  Container p-worker-1  Starting",
    ])
    assert dry_run_actions(text) == [
        {"id": "p-auth-1", "status": "Recreated", "service": None},
        {"id": "p-new-1", "status": "Created", "service": None},
        {"id": "p-worker-1", "status": "Started", "service": None},
    ]
    assert dry_run_actions(" DRY-RUN MODE -  Container p-db-1  Running\n") == []


def test_the_gate_judges_every_container_of_its_services_and_the_given_ones_once():
    after = {"p-api-1": container("p-api-1", "a", "api"), "p-api-2": container("p-api-2", "b", "api"),
             "p-db-1": container("p-db-1", "c", "db"), "p-auth-3": container("p-auth-3", "d", "auth")}
    assert gated_names(after, ["api", "auth"], ["p-auth-3", "p-auth-4"]) == ["p-api-1", "p-api-2", "p-auth-3", "p-auth-4"]
    assert gated_names(after, [], []) == []


def box(service, number=1, state="running", health="healthy"):
    return ("%s-%d" % (service, number), {"service": service, "state": state, "health": health})


def test_services_that_wait_for_a_changing_dependency_come_up_after_it_is_proven_healthy():
    from ansible_collections.vpsops.deploy.plugins.module_utils._phase import up_steps
    waits = {"api": {"db": "service_healthy", "cache": "service_started"},
             "worker": {"api": "service_healthy"}, "cache": {"db": "service_started"}}
    before = dict([box("db"), box("cache"), box("api"), box("worker")])
    services = ["api", "cache", "db", "worker"]
    # db changes: api waits for it (cache, started after it, comes up beside it), worker for api.
    assert up_steps(services, waits, {"db", "api", "worker"}, before) == [
        ([], ["cache", "db"]), (["db"], ["api"]), (["api"], ["worker"])]
    # Nothing that anyone waits healthy for changes, and Docker calls every one healthy: one plain up.
    assert up_steps(services, waits, {"cache"}, before) is None
    # ... unless Docker still says starting (a deploy moments ago proved it itself).
    starting = dict(before, **dict([box("db", health="starting")]))
    assert up_steps(services, waits, {"cache"}, starting)[1] == (["db"], ["api"])
    # changing None: everything may change.
    assert len(up_steps(services, waits, None, before)) == 3


def test_a_dependency_outside_the_phase_is_proven_only_while_docker_says_starting():
    from ansible_collections.vpsops.deploy.plugins.module_utils._phase import up_steps
    waits = {"app": {"redis": "service_healthy"}, "web": {"app": "service_started"}}
    healthy = dict([box("redis")])
    assert up_steps(["app", "web"], waits, None, healthy) is None  # compose has nothing to wait for
    starting = dict([box("redis", health="starting")])
    assert up_steps(["app", "web"], waits, None, starting) == [(["redis"], ["app", "web"])]


def test_compose_decides_itself_what_up_steps_cannot_do_the_same_way():
    from ansible_collections.vpsops.deploy.plugins.module_utils._phase import up_steps
    starting = dict([box("redis", health="starting")])
    plan = {"app": {"redis": "service_healthy"}}
    # a one-shot dependency: compose runs it before the service
    assert up_steps(["app", "db"], {"app": {"db": "service_healthy", "seed": "service_completed_successfully"}},
                    None, {}) is None
    # a dependency outside the phase that does not run, or runs without a healthcheck, or is unhealthy
    assert up_steps(["app"], plan, None, {}) is None
    assert up_steps(["app"], dict(plan, app={"redis": "service_healthy", "gone": "service_started"}), None,
                    starting) is None
    assert up_steps(["app"], dict(plan, app={"redis": "service_healthy", "nats": "service_healthy"}), None,
                    dict(starting, **dict([box("nats", health=None)]))) is None
    assert up_steps(["app"], dict(plan, app={"redis": "service_healthy", "nats": "service_healthy"}), None,
                    dict(starting, **dict([box("nats", health="unhealthy")]))) is None
    assert up_steps(["app"], plan, None, dict([box("redis", state="exited", health="starting")])) is None
    # a cycle: compose's to name
    assert up_steps(["a", "b"], {"a": {"b": "service_healthy"}, "b": {"a": "service_healthy"}}, None, {}) is None
