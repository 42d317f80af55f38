"""Attack: container creates and controls through the engine proxy's launch view, on the real engine.

The daemon and webserver hold no Docker socket, only the proxy's launch view. Whoever takes over
one of them tries what the socket would allow: a privileged container, added capabilities, the
host's root filesystem, the host network, another image, a container without the run labels, and
stopping or exec-ing into a container that is not a run container. Each is a 403 and nothing is
created or stopped (the engine's container list is the same before and after). The launcher's own
hardened create/start/stop passes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from e2i_pipelines.scaler.engine_policy import RunPolicy
from tests.conftest import require
from tests.scaler.test_engine_proxy import (  # noqa: F401 - fixtures
    IMAGE,
    hardened_kwargs,
    launch_env,
    launch_proxy,
)

pytestmark = pytest.mark.docker
OTHER_IMAGE = "e2i-base:bookworm"


@pytest.fixture(scope="module")
def attacker(launch_proxy: str) -> Iterator[Any]:  # noqa: F811
    import docker

    client = docker.DockerClient(base_url=launch_proxy, timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def bystander(docker_client: Any) -> Iterator[Any]:
    """A running container that is not a run container of the stack (e.g. Postgres)."""
    container = docker_client.containers.run(
        IMAGE, ["sleep", "300"], detach=True, network_mode="none", name=f"e2i-bystander-{uuid.uuid4().hex[:8]}",
        labels={"com.docker.compose.service": "postgres", "dagster/run_id": "not-ours"})
    yield container
    container.remove(force=True)


def all_containers(docker_client: Any) -> set[str]:
    return {c.id for c in docker_client.containers.list(all=True)}


def assert_refused(attempt: Any, docker_client: Any, why: str) -> None:
    import docker

    before = all_containers(docker_client)
    with pytest.raises(docker.errors.APIError) as refused:
        attempt()
    assert refused.value.status_code == 403, refused.value
    assert why in refused.value.explanation, refused.value.explanation
    assert all_containers(docker_client) == before


def create_with(policy: RunPolicy, client: Any, **changes: Any) -> Any:
    kwargs = {**hardened_kwargs(policy, f"attack-{uuid.uuid4().hex[:8]}"), **changes}
    return client.containers.create(**kwargs)


@pytest.mark.parametrize("changes,why", [
    ({"privileged": True}, "Privileged"),
    ({"cap_add": ["SYS_ADMIN"]}, "CapAdd"),
    ({"volumes": ["/:/host"]}, "host path"),
    ({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}, "host path"),
    ({"network": "host"}, "NetworkMode"),
    ({"pid_mode": "host"}, "PidMode"),
    ({"devices": ["/dev/mem:/dev/mem"]}, "Devices"),
    ({"security_opt": ["no-new-privileges", "seccomp=unconfined"]}, "SecurityOpt"),
    ({"sysctls": {"net.ipv4.ip_forward": "1"}}, "Sysctls"),
    ({"cap_drop": None}, "CapDrop"),
    ({"user": "0:0"}, "User"),
    ({"read_only": False}, "ReadonlyRootfs"),
    ({"labels": {"dagster/run_id": "x"}}, "Labels"),
])
def test_a_dangerous_create_is_refused_and_nothing_is_created(attacker: Any, launch_env: RunPolicy,  # noqa: F811
                                                              docker_client: Any, changes: dict, why: str) -> None:
    assert_refused(lambda: create_with(launch_env, attacker, **changes), docker_client, why)


def test_another_image_is_refused(attacker: Any, launch_env: RunPolicy, docker_client: Any) -> None:  # noqa: F811
    require(any(OTHER_IMAGE in image.tags for image in docker_client.images.list()), f"image {OTHER_IMAGE}")
    assert_refused(lambda: create_with(launch_env, attacker, image=OTHER_IMAGE), docker_client, "Image")


def test_a_container_that_is_not_a_run_container_cannot_be_touched(attacker: Any, bystander: Any,
                                                                   docker_client: Any) -> None:
    import docker

    for name, attempt in {
        "stop": lambda: attacker.api.stop(bystander.id, timeout=1),
        "kill": lambda: attacker.api.kill(bystander.name),
        "remove": lambda: attacker.api.remove_container(bystander.id, force=True),
        "inspect": lambda: attacker.api.inspect_container(bystander.id),
        "logs": lambda: attacker.api.logs(bystander.id),
        "exec": lambda: attacker.api.exec_create(bystander.id, ["id"]),
        "archive": lambda: attacker.api.get_archive(bystander.id, "/etc"),
    }.items():
        with pytest.raises(docker.errors.APIError) as refused:
            attempt()
        assert refused.value.status_code == 403, name
    bystander.reload()
    assert bystander.status == "running"


def test_engine_wide_operations_are_refused(attacker: Any, docker_client: Any) -> None:
    import docker

    before_images = {i.id for i in docker_client.images.list()}
    for name, attempt in {
        "pull": lambda: attacker.images.pull("busybox", tag="latest"),
        "volume": lambda: attacker.volumes.create("e2i-attack"),
        "network": lambda: attacker.networks.create("e2i-attack"),
        "images": attacker.images.list,
        "prune": attacker.containers.prune,
    }.items():
        with pytest.raises(docker.errors.APIError) as refused:
            attempt()
        assert refused.value.status_code == 403, name
    assert {i.id for i in docker_client.images.list()} == before_images
    assert "e2i-attack" not in {v.name for v in docker_client.volumes.list()}


def test_the_launchers_own_create_start_stop_passes(attacker: Any, launch_env: RunPolicy,  # noqa: F811
                                                    docker_client: Any) -> None:
    container = create_with(launch_env, attacker)
    try:
        container.start()
        attacker.api.stop(container.id, timeout=2)
        state = docker_client.api.inspect_container(container.id)["State"]
        assert state["Status"] == "exited" and state["StartedAt"] > "0001"
    finally:
        attacker.api.remove_container(container.id, force=True)
    assert container.id not in all_containers(docker_client)
