"""The stack's other stores: `databases` entries with `type: redis` or `type: volume` (default
postgres, so old inventories stay valid), checked on the controller with errors naming the key."""

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._stack import StackError, check_stack

PHASES = [dict(name="data", compose_files=["compose.yml"], backup=["cache", "nats", "ar"])]


def stack(**databases):
    return dict(name="shop", source="files/shop", phases=PHASES, databases=databases)


def test_every_type_is_valid_and_postgres_stays_the_default():
    check_stack(stack(cache=dict(type="redis", container="shop-redis-1", login_password="pw"),
                      nats=dict(type="volume", volume="shop_nats-data", image="vpsops-lab/nats:2.15", access="host"),
                      ar=dict(db="ar_db", container="shop-ar-postgres-1", login_user="ar")))
    check_stack(stack(cache=dict(type="redis", container="r"), nats=dict(type="volume", volume="v"),
                      ar=dict(type="postgres", db="ar_db")))


@pytest.mark.parametrize("entry,words", [
    (dict(type="redis"), "missing required arguments: container found in vpsops_stack.databases.cache"),
    (dict(type="volume"), "missing required arguments: volume found in vpsops_stack.databases.cache"),
    (dict(type="redis", container="r", db="x"), "vpsops_stack.databases.cache.db. Supported parameters include"),
    (dict(type="mongo", container="r"), "vpsops_stack.databases.cache.type must be one of postgres, redis, volume"),
    (dict(type="volume", volume="v", access="nfs"), "value of access must be one of: auto, host, container"),
    (dict(container="r"), "missing required arguments: db"),
])
def test_a_wrong_store_is_named(entry, words):
    with pytest.raises(StackError) as caught:
        check_stack(stack(cache=entry, nats=dict(type="volume", volume="v"), ar=dict(db="ar")))
    assert words in str(caught.value)


def test_the_redis_password_is_never_in_the_message():
    with pytest.raises(StackError) as caught:
        check_stack(stack(cache=dict(type="redis", container="r", login_password="s3cret-pw", bogus=1),
                          nats=dict(type="volume", volume="v"), ar=dict(db="ar")))
    assert "s3cret-pw" not in str(caught.value) and "bogus" in str(caught.value)
