"""Image reads and the pin writes (tag, untag) over the Engine API against the lab's daemon, each
compared with what the Docker CLI does and sees."""

import secrets
import subprocess

import pytest

from ansible_collections.vpsops.deploy.plugins.module_utils._compose import Docker, DockerError
from conftest import run

BASE = "vpsops-lab/redis:7"


@pytest.fixture
def image(lab):
    """A throw-away image with exactly one tag (its own label makes its ID new)."""
    ref = "vpsops-test/api-image:%s" % secrets.token_hex(4)
    subprocess.run(["docker", "build", "-q", "-t", ref, "-"], input=("FROM %s\nLABEL vpsops.test=%s\n" % (BASE, ref)).encode(),
                   check=True, capture_output=True)
    image_id = run(["docker", "image", "inspect", "-f", "{{.Id}}", ref]).stdout.strip()
    yield ref, image_id
    run(["docker", "rm", "-f", "vpsops-test-api-image"], check=False)
    run(["docker", "image", "rm", "-f", image_id], check=False)


def cli_tags(image_id):
    return set(run(["docker", "image", "inspect", "-f", "{{join .RepoTags \" \"}}", image_id]).stdout.split())


def test_image_reads_answer_as_the_cli_does(image):
    ref, image_id = image
    api, cli = Docker(), Docker(api=False)
    refs = [ref, BASE, image_id, "vpsops-test/absent:none"]
    found = api.images(refs)
    assert api.engine_api() is not None and cli.engine_api() is None
    assert found == cli.images(refs)
    assert set(found) == {ref, BASE, image_id} and found[ref]["id"] == image_id


def test_tag_and_untag_over_the_api(image):
    ref, image_id = image
    docker = Docker()
    pin = "vpsops-pin/api-test:%s" % image_id.split(":")[-1][:12]
    registry_style = "localhost:5000/vpsops/api-test"  # a registry port and no tag: latest
    docker.tag(image_id, pin)
    docker.tag(image_id, registry_style)
    assert {ref, pin, registry_style + ":latest"} <= cli_tags(image_id)
    assert docker.untag(pin) is True
    assert docker.untag(registry_style) is True
    assert cli_tags(image_id) == {ref}
    assert docker.untag(pin) is False  # already gone: not an error


def test_untag_of_the_last_tag_of_an_image_a_container_uses_keeps_it(image):
    ref, image_id = image
    run(["docker", "create", "--name", "vpsops-test-api-image", ref, "true"])
    assert Docker().untag(ref) is False  # Docker's conflict: the image stays, tagged
    assert cli_tags(image_id) == {ref}


def test_tag_of_an_unknown_image_is_a_clear_error(lab):
    with pytest.raises(DockerError, match="docker image tag failed.*No such image"):
        Docker().tag("sha256:" + "0" * 64, "vpsops-pin/api-test:none")
