"""The read-only engine proxy on the real Docker engine: reads pass, writes and tricks get 403."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from e2i_pipelines.scaler.capacity import RUN_ID_LABEL, SERVICE_LABEL, measure_capacity
from e2i_pipelines.scaler.engine_proxy import EngineProxy, refusal
from tests.conftest import require

SOCKET = "/var/run/docker.sock"
IMAGE = "e2i:local"


@pytest.mark.parametrize("method,target", [
    ("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", "/v1.41/version"), ("GET", "/info"),
    ("GET", "/v1.43/containers/json?all=0&limit=-1"), ("GET", "/containers/e2i_daemon_1/json"),
    ("GET", "/v1.41/containers/0123abcd/stats?stream=False"),
])
def test_reads_on_the_allowlist_pass(method: str, target: str) -> None:
    assert refusal(method, target) is None


@pytest.mark.parametrize("method,target,why", [
    ("POST", "/containers/create", "read-only"), ("DELETE", "/containers/abc", "read-only"),
    ("POST", "/v1.41/containers/abc/kill", "read-only"), ("PUT", "/_ping", "read-only"),
    ("GET", "/images/json", "allowlist"), ("GET", "/containers/abc/logs", "allowlist"),
    ("GET", "/containers/abc/archive?path=/etc", "allowlist"), ("GET", "/events", "allowlist"),
    ("GET", "/containers/json/../create", "allowlist"), ("GET", "/v1.43/containers/x/../../images/create", "allowlist"),
    ("GET", "/containers/%2e%2e/images/json", "allowlist"), ("GET", "/containers/../json", "allowlist"),
    ("GET", "//containers/json", "allowlist"), ("GET", "http://x/_ping", "allowlist"),
    ("GET", "/v1.41/v1.41/_ping", "allowlist"), ("GET", "/containers/abc/json/", "allowlist"),
])
def test_everything_else_is_refused_with_a_reason(method: str, target: str, why: str) -> None:
    reason = refusal(method, target)
    assert reason and target in reason and why in reason


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    """A proxy on a free loopback port in a thread; yields its ``tcp://`` address."""
    require(os.path.exists(SOCKET), f"Docker socket {SOCKET}")
    server = EngineProxy(("127.0.0.1", 0), SOCKET)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def via_proxy(proxy: str) -> Iterator[Any]:
    import docker

    client = docker.DockerClient(base_url=proxy, timeout=20)
    yield client
    client.close()


@pytest.fixture(scope="module")
def sleeper(docker_client: Any) -> Iterator[Any]:
    """A real container (started directly on the socket) with limits, labels and a secret env."""
    require(any(IMAGE in image.tags for image in docker_client.images.list()), f"image {IMAGE}")
    container = docker_client.containers.run(
        IMAGE, ["sleep", "300"], detach=True, network_mode="none", name=f"e2i-proxy-test-{uuid.uuid4().hex[:8]}",
        nano_cpus=500_000_000, mem_limit="256m", environment={"E2I_SECRET": "s3cret"},
        labels={SERVICE_LABEL: "proxy-test-service"})
    yield container
    container.remove(force=True)


def raw(proxy: str, method: str, target: str) -> tuple[int, bytes]:
    """One request sent exactly as written (no client-side path normalisation)."""
    host, port = proxy.removeprefix("tcp://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.docker
def test_engine_reads_pass_through(via_proxy: Any, docker_client: Any, sleeper: Any) -> None:
    assert via_proxy.ping() is True
    assert via_proxy.version()["ApiVersion"] == docker_client.version()["ApiVersion"]
    assert via_proxy.info()["NCPU"] == docker_client.info()["NCPU"]
    listed = {c.id: c for c in via_proxy.containers.list()}
    assert sleeper.id in listed
    seen = listed[sleeper.id]
    assert seen.labels[SERVICE_LABEL] == "proxy-test-service"
    assert seen.attrs["HostConfig"]["NanoCpus"] == 500_000_000 and seen.attrs["HostConfig"]["Memory"] == 256 * 2**20
    assert seen.attrs["Config"]["Env"] == []  # the stack's secrets live there
    assert "E2I_SECRET=s3cret" in docker_client.containers.get(sleeper.id).attrs["Config"]["Env"]
    stats = seen.stats(stream=False)
    assert stats["memory_stats"]["usage"] > 0 and stats["cpu_stats"]["online_cpus"] >= 1


@pytest.mark.docker
def test_a_stats_stream_is_relayed_without_blocking_other_requests(proxy: str, via_proxy: Any,
                                                                   sleeper: Any) -> None:
    stream = via_proxy.api.stats(sleeper.id, stream=True, decode=True)
    samples = [next(stream), next(stream)]
    assert all(s["id"] == sleeper.id for s in samples)
    assert raw(proxy, "GET", "/_ping") == (200, b"OK")  # while the stream is open
    stream.close()


@pytest.mark.docker
def test_writes_are_refused_and_nothing_happens(proxy: str, via_proxy: Any, docker_client: Any,
                                               sleeper: Any) -> None:
    import docker

    seen = via_proxy.containers.get(sleeper.id)
    name = f"e2i-proxy-refused-{uuid.uuid4().hex[:8]}"
    attempts = {
        "create": lambda: via_proxy.containers.create(IMAGE, ["true"], network_mode="none", name=name),
        "kill": seen.kill,
        "remove": lambda: seen.remove(force=True),
        "exec": lambda: seen.exec_run(["true"]),
        "images": via_proxy.images.list,
        "pull": lambda: via_proxy.images.pull("busybox", tag="latest"),
        "logs": seen.logs,
    }
    for name, attempt in attempts.items():
        with pytest.raises(docker.errors.APIError) as refused:
            attempt()
        assert refused.value.status_code == 403, name
        assert "refused" in refused.value.explanation and "engine proxy" in refused.value.explanation, name
    sleeper.reload()
    assert sleeper.status == "running"
    assert name not in {c.name for c in docker_client.containers.list(all=True)}


@pytest.mark.docker
@pytest.mark.parametrize("target", [
    "/containers/json/../create", "/v1.43/containers/x/../../images/create",
    "/containers/%2e%2e/%2e%2e/images/json", "/containers/json/..%2fcreate", "/v1.41/containers/x/../../../info/../images/json",
])
def test_path_tricks_are_refused(proxy: str, target: str) -> None:
    status, body = raw(proxy, "GET", target)
    assert status == 403 and "allowlist" in json.loads(body)["message"], body


@pytest.mark.docker
def test_capacity_is_measured_on_the_engine_through_the_proxy(proxy: str, sleeper: Any, docker_client: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``DOCKER_HOST`` pointing at the proxy (as in the code server): the engine path of
    ``measure_capacity``, services counted with their use, run containers with their limits."""
    run = docker_client.containers.run(
        IMAGE, ["sleep", "300"], detach=True, network_mode="none", nano_cpus=250_000_000, mem_limit="512m",
        labels={RUN_ID_LABEL: f"proxy-test-{uuid.uuid4().hex[:8]}"})
    try:
        monkeypatch.setenv("DOCKER_HOST", proxy)
        capacity = measure_capacity("docker", run_launcher=None)
    finally:
        run.remove(force=True)
    assert capacity.source == "docker" and not capacity.note, capacity
    info = docker_client.info()
    assert (capacity.total_cpus, capacity.total_memory_bytes) == (info["NCPU"], info["MemTotal"])
    holdings = {h.name: h for h in capacity.holdings}
    service = holdings[sleeper.name]
    assert service.kind == "service" and service.basis == "measured" and 0 < service.memory_bytes < 64 * 2**20
    assert (holdings[run.name].kind, holdings[run.name].cpus, holdings[run.name].memory_bytes,
            holdings[run.name].basis) == ("run", 0.25, 512 * 2**20, "limits")


def test_the_command_line_serves_and_stops_cleanly(tmp_path: Any) -> None:
    require(os.path.exists(SOCKET), f"Docker socket {SOCKET}")
    process = subprocess.Popen([sys.executable, "-m", "e2i_pipelines.scaler.engine_proxy", "--listen", "127.0.0.1:0",
                                "--socket", SOCKET], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        port = int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
        assert raw(f"tcp://127.0.0.1:{port}", "GET", "/_ping") == (200, b"OK")
        status, body = raw(f"tcp://127.0.0.1:{port}", "POST", "/containers/create")
        assert status == 403 and "read-only" in json.loads(body)["message"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    missing = subprocess.run([sys.executable, "-m", "e2i_pipelines.scaler.engine_proxy", "--socket",
                              str(tmp_path / "none.sock")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no Docker socket at" in missing.stderr
    bad = subprocess.run([sys.executable, "-m", "e2i_pipelines.scaler.engine_proxy", "--listen", "2375"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
