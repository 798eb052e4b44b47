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
