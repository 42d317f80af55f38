"""Attack: the engine proxy's one extra bind, the run secrets, used to reach something else.

The launch view lets a run container mount the data volume and, when the operator configures it,
exactly one more source: the secrets volume (or host path) at the secrets directory, read-only.
Whoever holds the launch view tries to bend that one allowance: mount the secrets writable, at
another target, with extra options, another host path, the data volume over the secrets
directory, the secrets source over the data directory. Each is refused naming the rule. On the
real engine: the read-only secrets bind creates a container that reads the secret and cannot
write it; the writable one is a 403 and nothing is created.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from e2i_pipelines.scaler.engine_policy import Refused, RunPolicy
from e2i_pipelines.scaler.engine_proxy import launch_policy
from tests.conftest import require
from tests.scaler.test_engine_proxy import DATA_DIR, IMAGE, SOCKET, hardened_kwargs, run_body

SECRETS = "/run/secrets"
VOLUME_POLICY = RunPolicy(image=IMAGE, network="p_runs", labels={"e2i.stack": "p"}, data_volume="p_data",
                          secrets_source="p_run_secrets")
HOST_FILE = "/etc/e2i/secrets/dagster_pg_password"
HOST_POLICY = RunPolicy(image=IMAGE, network="p_runs", labels={"e2i.stack": "p"}, data_volume="p_data",
                        secrets_source=HOST_FILE, secrets_dir=f"{SECRETS}/dagster_pg_password")


def with_binds(*binds: str) -> dict[str, Any]:
    targets = {bind.split(":")[1]: {} for bind in binds}
    return run_body(Binds=list(binds), Volumes=targets)


def test_the_read_only_secrets_bind_passes() -> None:
    VOLUME_POLICY.check_create(with_binds(f"p_data:{DATA_DIR}", f"p_run_secrets:{SECRETS}:ro"))
    VOLUME_POLICY.check_create(with_binds(f"p_run_secrets:{SECRETS}:ro"))
    HOST_POLICY.check_create(with_binds(f"p_data:{DATA_DIR}", f"{HOST_FILE}:{SECRETS}/dagster_pg_password:ro"))


@pytest.mark.parametrize("policy,binds,why", [
    (VOLUME_POLICY, [f"p_run_secrets:{SECRETS}"], "only read-only"),
    (VOLUME_POLICY, [f"p_run_secrets:{SECRETS}:rw"], "only read-only"),
    (VOLUME_POLICY, [f"p_run_secrets:{SECRETS}:ro,z"], "only read-only"),
    (VOLUME_POLICY, [f"p_run_secrets:{SECRETS}:ro:rw"], "only read-only"),
    (VOLUME_POLICY, ["p_run_secrets:/opt/e2i:ro"], "only read-only"),
    (VOLUME_POLICY, [f"p_run_secrets:{DATA_DIR}:ro"], "only read-only"),
    (VOLUME_POLICY, [f"p_run_secrets:{SECRETS}/../../etc:ro"], "only read-only"),
    (VOLUME_POLICY, [f"p_data:{SECRETS}:ro"], "data volume"),
    (VOLUME_POLICY, [f"p_pg_data:{SECRETS}:ro"], "data volume"),
    (VOLUME_POLICY, [f"/etc/e2i/secrets:{SECRETS}:ro"], "host path"),
    (VOLUME_POLICY, [f"/var/run/docker.sock:{SECRETS}:ro"], "host path"),
    (HOST_POLICY, [f"{HOST_FILE}:{SECRETS}/dagster_pg_password"], "only read-only"),
    (HOST_POLICY, [f"{HOST_FILE}:/etc/passwd:ro"], "only read-only"),
    (HOST_POLICY, [f"/etc/e2i/secrets:{SECRETS}/dagster_pg_password:ro"], "host path"),
    (HOST_POLICY, [f"/etc/e2i/secrets/../../etc/shadow:{SECRETS}/dagster_pg_password:ro"], "host path"),
    (HOST_POLICY, [f"/etc/e2i/secrets/api_pg_password:{SECRETS}/dagster_pg_password:ro"], "host path"),
])
def test_a_bent_secrets_bind_is_refused(policy: RunPolicy, binds: list[str], why: str) -> None:
    with pytest.raises(Refused, match=why):
        policy.check_create(with_binds(*binds))


def test_without_a_secrets_source_nothing_but_the_data_volume_binds() -> None:
    plain = RunPolicy(image=IMAGE, network="p_runs", labels={"e2i.stack": "p"}, data_volume="p_data")
    with pytest.raises(Refused, match="data volume"):
        plain.check_create(with_binds(f"p_run_secrets:{SECRETS}:ro"))
    with pytest.raises(Refused, match="Volumes may only name"):
        plain.check_create(run_body(Volumes={DATA_DIR: {}, SECRETS: {}}))
    with pytest.raises(Refused, match="Volumes may only name"):  # configured: still no third target
        VOLUME_POLICY.check_create(run_body(Volumes={DATA_DIR: {}, SECRETS: {}, "/etc": {}}))


@pytest.mark.parametrize("source,target", [
    ("../secrets", SECRETS), ("/etc/e2i/../shadow", SECRETS), ("vol:ume", SECRETS), ("a/b", SECRETS),
    ("p_run_secrets", "relative"), ("p_run_secrets", "/"), ("p_run_secrets", DATA_DIR),
])
def test_a_bad_secrets_configuration_is_refused_at_start(source: str, target: str) -> None:
    with pytest.raises(ValueError, match="secrets"):
        RunPolicy(image=IMAGE, network="n", secrets_source=source, secrets_dir=target)
    args = argparse.Namespace(run_image=IMAGE, run_network="n", run_label=["e2i.stack=p"], data_volume="p_data",
                              data_dir=DATA_DIR, secrets_source=source, secrets_dir=target)
    with pytest.raises(argparse.ArgumentTypeError, match="secrets"):
        launch_policy(args)


# -- on the real engine ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secrets_env(docker_client: Any) -> Iterator[tuple[RunPolicy, Any]]:
    """A project of our own with a runs network, a data volume and a secrets volume holding a secret."""
    require(any(IMAGE in image.tags for image in docker_client.images.list()), f"image {IMAGE}")
    project = f"e2isec{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(f"{project}_runs", internal=True)
    data = docker_client.volumes.create(f"{project}_data")
    secrets = docker_client.volumes.create(f"{project}_run_secrets", driver_opts={
        "type": "tmpfs", "device": "tmpfs", "o": "size=64k,uid=10001,gid=10001,mode=0700"})
    policy = RunPolicy(image=IMAGE, network=network.name, labels={"e2i.stack": project}, data_volume=data.name,
                       secrets_source=secrets.name)
    try:
        yield policy, docker_client
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": f"e2i.stack={project}"}):
            container.remove(force=True)
        network.remove()
        data.remove(force=True)
        secrets.remove(force=True)


@pytest.fixture(scope="module")
def secrets_proxy(secrets_env: tuple[RunPolicy, Any]) -> Iterator[Any]:
    import threading

    import docker
    from e2i_pipelines.scaler.engine_proxy import EngineProxy

    server = EngineProxy(("127.0.0.1", 0), SOCKET, policy=secrets_env[0])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{server.server_address[1]}", timeout=30)
    yield client
    client.close()
    server.shutdown()
    server.server_close()


@pytest.mark.docker
def test_a_run_container_reads_the_secret_read_only_and_a_writable_bind_is_refused(
        secrets_env: tuple[RunPolicy, Any], secrets_proxy: Any) -> None:
    import docker

    policy, engine = secrets_env
    run_id = f"sec-{uuid.uuid4().hex[:8]}"
    # The daemon's stand-in fills the tmpfs volume and holds it (a tmpfs volume is emptied when no
    # container mounts it; in the stack the daemon always does while it launches runs).
    holder = engine.containers.run(
        IMAGE, ["sh", "-c", f"echo s3cr3t-{run_id} > {SECRETS}/pw && chmod 0400 {SECRETS}/pw && exec sleep 120"],
        user="10001:10001", volumes=[f"{policy.secrets_source}:{SECRETS}"], network_mode="none", detach=True,
        labels={"e2i.stack": policy.labels["e2i.stack"]})
    for _ in range(100):
        if holder.exec_run(["test", "-s", f"{SECRETS}/pw"]).exit_code == 0:
            break
        time.sleep(0.2)
    before = {c.id for c in engine.containers.list(all=True)}
    with pytest.raises(docker.errors.APIError) as refused:
        secrets_proxy.containers.create(**{**hardened_kwargs(policy, run_id),
                                           "volumes": [f"{policy.secrets_source}:{SECRETS}:rw"]})
    assert refused.value.status_code == 403 and "only read-only" in refused.value.explanation
    assert {c.id for c in engine.containers.list(all=True)} == before
    kwargs = hardened_kwargs(policy, run_id)
    kwargs.update(command=["sh", "-c", f"cat {SECRETS}/pw; echo x > {SECRETS}/pw && echo WROTE"],
                  volumes=[f"{policy.data_volume}:{DATA_DIR}", f"{policy.secrets_source}:{SECRETS}:ro"])
    container = secrets_proxy.containers.create(**kwargs)
    try:
        container.start()
        assert engine.api.wait(container.id, timeout=60)["StatusCode"] != 0
        output = engine.api.logs(container.id).decode()
    finally:
        engine.api.remove_container(container.id, force=True)
    assert f"s3cr3t-{run_id}" in output and "WROTE" not in output and "Read-only file system" in output
