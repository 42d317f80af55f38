"""Attack: a run container reaching what it must not, on the stack's real networks.

The compose project comes from docker/docker-compose.yml itself (its networks, aliases, secrets,
hardening and the real Postgres and engine proxy); the webserver, code server and MLflow run a
plain TCP listener on their ports instead of Dagster/MLflow (same containers, same networks), so
that "unreachable" means isolated, never "not up yet": a probe on the backend network reaches
them. A container created with the run launcher's own container settings (rendered
docker/dagster.compose.yaml) on the `runs` network then tries the webserver, the code server and
both engine proxy views by name, and looks for the Docker socket: all fail, while Postgres and
MLflow answer. By address it still reaches them on this CI engine (dockerd --iptables=false: no
inter-network firewall): an expected failure until the engine's firewall is on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require
from tests.stack.compose_stack import ComposeStack, image_present

pytestmark = [pytest.mark.docker, pytest.mark.stack, pytest.mark.timeout(900)]

STAND_INS = {"webserver": 3000, "code-server": 4000, "mlflow": 5000}
PROBE = r"""
import json, os, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            out[target] = "open"
    except OSError as exc:
        out[target] = type(exc).__name__
out["socket"] = os.path.exists("/var/run/docker.sock")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def topology(docker_client: Any) -> Iterator[ComposeStack]:
    """The stack's networks with Postgres, the engine proxy and the listener stand-ins up."""
    require(shutil.which("docker-compose") is not None, "docker-compose")
    require(image_present(docker_client, ComposeStack.image), f"image {ComposeStack.image}")
    workdir = Path(tempfile.mkdtemp(prefix="e2i-isolation-"))
    workdir.chmod(0o755)
    override = workdir / "stand-ins.yml"
    override.write_text(yaml.safe_dump({"version": "2.4", "services": {
        name: {"command": ["python", "-m", "http.server", str(port)], "healthcheck": {"test": ["CMD", "true"]}}
        for name, port in STAND_INS.items()}}))
    stack = ComposeStack(workdir=workdir, extra_compose_files=[override])
    try:
        stack.compose("build", "postgres", timeout=900)
        stack.compose("up", "-d", "postgres", "engine-proxy", *STAND_INS, timeout=600)
        yield stack
    finally:
        stack.cleanup(docker_client)


def probe(docker_client: Any, stack: ComposeStack, network: str, targets: list[str], **kwargs: Any) -> dict:
    """Connect to each ``host:port`` from a fresh container on ``network`` (the stack's)."""
    output = docker_client.containers.run(
        stack.image, ["python", "-c", PROBE, *targets], network=f"{stack.project}_{network}", remove=True,
        **kwargs)
    return json.loads(output.decode().strip().splitlines()[-1])


def address(docker_client: Any, stack: ComposeStack, service: str, network: str) -> str:
    attrs = docker_client.api.inspect_container(stack.container_id(service))
    return attrs["NetworkSettings"]["Networks"][f"{stack.project}_{network}"]["IPAddress"]


def run_container_kwargs(stack: ComposeStack) -> dict[str, Any]:
    """The launcher's container settings for this project (as the launch view requires them)."""
    kwargs = dict(yaml.safe_load(stack.instance_file.read_text())["run_launcher"]["config"]["container_kwargs"])
    kwargs.pop("stop_timeout", None)
    kwargs["labels"] = {**kwargs["labels"], "dagster/run_id": "isolation-probe"}
    return kwargs


def test_stand_ins_answer_on_the_backend(topology: ComposeStack, docker_client: Any) -> None:
    """Positive control: what the run container must not reach is up and reachable from backend."""
    targets = [f"{name}:{port}" for name, port in STAND_INS.items()] + ["postgres:5432"]
    seen = probe(docker_client, topology, "backend", targets)
    assert all(seen[t] == "open" for t in targets), seen
    seen = probe(docker_client, topology, "engine", ["engine-proxy:2375"])
    assert seen["engine-proxy:2375"] == "open", seen
    seen = probe(docker_client, topology, "launch", ["engine-launch:2376"])
    assert seen["engine-launch:2376"] == "open", seen


def test_the_code_servers_network_does_not_reach_the_launch_view(topology: ComposeStack,
                                                                 docker_client: Any) -> None:
    proxy_on_engine = address(docker_client, topology, "engine-proxy", "engine")
    seen = probe(docker_client, topology, "engine", [f"{proxy_on_engine}:2376", "engine-launch:2376"])
    assert seen[f"{proxy_on_engine}:2376"] != "open" and seen["engine-launch:2376"] != "open", seen


def test_a_run_container_reaches_postgres_and_mlflow_only(topology: ComposeStack, docker_client: Any) -> None:
    forbidden = ["webserver:3000", "code-server:4000", "engine-proxy:2375", "engine-launch:2376"]
    allowed = ["postgres:5432", "mlflow:5000"]
    seen = probe(docker_client, topology, "runs", allowed + forbidden, **run_container_kwargs(topology))
    assert all(seen[t] == "open" for t in allowed), seen
    assert not any(seen[t] == "open" for t in forbidden), seen
    assert seen["socket"] is False


def test_a_run_container_cannot_reach_other_networks_by_address(topology: ComposeStack,
                                                                docker_client: Any) -> None:
    by_address = [f"{address(docker_client, topology, 'webserver', 'backend')}:3000",
                  f"{address(docker_client, topology, 'code-server', 'backend')}:4000",
                  f"{address(docker_client, topology, 'engine-proxy', 'engine')}:2375",
                  f"{address(docker_client, topology, 'engine-proxy', 'launch')}:2376"]
    seen = probe(docker_client, topology, "runs", by_address, **run_container_kwargs(topology))
    assert not any(seen[t] == "open" for t in by_address), seen
