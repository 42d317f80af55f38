"""The engine proxy on the real Docker engine. Read-only view: reads pass, writes and tricks get
403. Launch view: the run launcher's create/start/stop/remove of hardened run containers pass,
everything else (and any other container) gets 403."""

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
from e2i_pipelines.scaler.engine_policy import Refused, RunPolicy
from e2i_pipelines.scaler.engine_proxy import EngineProxy, launch_route, refusal
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


# -- launch view ----------------------------------------------------------------------------------
DATA_DIR = "/var/lib/e2i/data"
TOP_LEVEL = {"User", "Env", "Cmd", "Image", "Volumes", "Labels", "Entrypoint", "NetworkingConfig"}
POLICY = RunPolicy(image=IMAGE, network="p_runs", labels={"e2i.stack": "p"}, data_volume="p_data")


def run_body(**changes: Any) -> dict[str, Any]:
    """A create body as dagster-docker + docker/dagster.compose.yaml send it (docker-py's shape)."""
    host = {"Memory": 2**30, "MemorySwap": 2**30, "ShmSize": 2**26, "ReadonlyRootfs": True, "NetworkMode": "p_runs",
            "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"], "Binds": [f"p_data:{DATA_DIR}"],
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}, "Tmpfs": {"/tmp": "rw,size=512m"},
            "PidsLimit": 256, "NanoCpus": 10**9}
    body = {"User": "10001:10001", "Env": ["A=1"], "Cmd": ["python", "-m", "x"], "Image": IMAGE,
            "Volumes": {DATA_DIR: {}}, "NetworkDisabled": False, "HostConfig": host,
            "NetworkingConfig": {"p_runs": None}, "Labels": {"dagster/run_id": "r1", "e2i.stack": "p"}}
    for key, value in changes.items():
        target = body if key in TOP_LEVEL else host
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return body


def test_the_launchers_create_body_passes() -> None:
    POLICY.check_create(run_body())
    POLICY.check_create(run_body(Privileged=False, CapAdd=None, Devices=[], MaskedPaths=None, IpcMode="private"))


@pytest.mark.parametrize("change,why", [
    ({"Privileged": True}, "Privileged"), ({"CapAdd": ["SYS_ADMIN"]}, "CapAdd"),
    ({"CapDrop": ["NET_RAW"]}, "CapDrop"), ({"CapDrop": None}, "CapDrop"),
    ({"NetworkMode": "host"}, "NetworkMode"), ({"NetworkMode": "p_backend"}, "NetworkMode"),
    ({"PidMode": "host"}, "PidMode"), ({"IpcMode": "host"}, "IpcMode"), ({"UTSMode": "host"}, "UTSMode"),
    ({"UsernsMode": "host"}, "UsernsMode"), ({"CgroupnsMode": "host"}, "CgroupnsMode"),
    ({"Binds": ["/:/host"]}, "host path"), ({"Binds": ["/var/run/docker.sock:/s"]}, "host path"),
    ({"Binds": ["other_volume:/var/lib/e2i/data"]}, "data volume"), ({"Binds": ["p_data:/etc"]}, "data volume"),
    ({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}, "Mounts"),
    ({"VolumesFrom": ["p_daemon_1"]}, "VolumesFrom"),
    ({"Devices": [{"PathOnHost": "/dev/sda"}]}, "Devices"), ({"DeviceRequests": [{"Count": -1}]}, "DeviceRequests"),
    ({"SecurityOpt": ["no-new-privileges", "seccomp=unconfined"]}, "SecurityOpt"),
    ({"SecurityOpt": ["apparmor:unconfined"]}, "SecurityOpt"), ({"SecurityOpt": None}, "SecurityOpt"),
    ({"Sysctls": {"kernel.shm_rmid_forced": "1"}}, "Sysctls"), ({"ReadonlyRootfs": False}, "ReadonlyRootfs"),
    ({"MaskedPaths": []}, "MaskedPaths"), ({"PortBindings": {"22/tcp": [{"HostPort": "22"}]}}, "PortBindings"),
    ({"Runtime": "runsc-unsafe"}, "Runtime"), ({"CgroupParent": "/"}, "CgroupParent"),
    ({"Tmpfs": {"/etc": ""}}, "Tmpfs"), ({"LogConfig": {"Type": "syslog"}}, "LogConfig"),
    ({"Image": "busybox:latest"}, "Image"), ({"Labels": {"dagster/run_id": "r1"}}, "Labels"),
    ({"Labels": {"e2i.stack": "p"}}, "Labels"), ({"Labels": {"dagster/run_id": "r", "e2i.stack": "other"}}, "Labels"),
    ({"User": None}, "User"), ({"User": "0:0"}, "User"), ({"User": "root"}, "User"),
    ({"Entrypoint": ["sh"]}, "Entrypoint"), ({"Volumes": {"/etc": {}}}, "Volumes"),
    ({"NetworkingConfig": {"EndpointsConfig": {"p_backend": {}}}}, "NetworkingConfig"),
])
def test_create_bodies_that_reach_the_host_are_refused_naming_the_key(change: dict, why: str) -> None:
    with pytest.raises(Refused) as refused:
        POLICY.check_create(run_body(**change))
    assert why in str(refused.value)


@pytest.mark.parametrize("body", [None, [], "x", {"Image": IMAGE}])
def test_malformed_create_bodies_are_refused(body: Any) -> None:
    with pytest.raises(Refused):
        POLICY.check_create(body)


@pytest.mark.parametrize("method,target,route", [
    ("GET", "/_ping", "read"), ("GET", "/v1.41/containers/json?all=1", "read"), ("GET", "/info", "read"),
    ("POST", "/v1.41/containers/create", "create"), ("POST", "/containers/create?name=x", "create"),
    ("GET", "/v1.41/containers/abc/json", "container"), ("GET", "/containers/abc/logs?tail=5", "container"),
    ("POST", "/containers/abc/start", "container"), ("POST", "/containers/abc/stop?t=20", "container"),
    ("POST", "/containers/abc/kill", "container"), ("POST", "/containers/abc/wait", "container"),
    ("DELETE", "/containers/abc?force=1", "container"),
    ("POST", "/containers/abc/exec", "refused"), ("POST", "/containers/abc/update", "refused"),
    ("PUT", "/containers/abc/archive", "refused"), ("GET", "/containers/abc/archive", "refused"),
    ("POST", "/images/create", "refused"), ("POST", "/networks/p_runs/connect", "refused"),
    ("POST", "/containers/create/../abc/exec", "refused"), ("DELETE", "/containers/create", "refused"),
    ("POST", "/volumes/create", "refused"), ("GET", "/containers/abc/attach/ws", "refused"),
])
def test_launch_routes(method: str, target: str, route: str) -> None:
    assert launch_route(method, target)[0] == route


@pytest.fixture(scope="module")
def launch_env(docker_client: Any) -> Iterator[RunPolicy]:
    """A project of our own: an internal ``runs`` network and a data volume, and the policy."""
    require(any(IMAGE in image.tags for image in docker_client.images.list()), f"image {IMAGE}")
    project = f"e2iproxy{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(f"{project}_runs", internal=True)
    volume = docker_client.volumes.create(f"{project}_data")
    yield RunPolicy(image=IMAGE, network=network.name, labels={"e2i.stack": project}, data_volume=volume.name)
    for container in docker_client.containers.list(all=True, filters={"label": f"e2i.stack={project}"}):
        container.remove(force=True)
    network.remove()
    volume.remove(force=True)


@pytest.fixture(scope="module")
def launch_proxy(launch_env: RunPolicy) -> Iterator[str]:
    server = EngineProxy(("127.0.0.1", 0), SOCKET, policy=launch_env)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def hardened_kwargs(policy: RunPolicy, run_id: str) -> dict[str, Any]:
    """docker-py create kwargs as the run launcher passes them (docker/dagster.compose.yaml)."""
    return dict(image=policy.image, command=["sh", "-c", f"echo ok > {DATA_DIR}/{run_id} && exec sleep 300"],
                detach=True, network=policy.network, labels={"dagster/run_id": run_id, **policy.labels},
                volumes=[f"{policy.data_volume}:{DATA_DIR}"], cap_drop=["ALL"], security_opt=["no-new-privileges"],
                read_only=True, tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"}, user="10001:10001",
                mem_limit="128m", memswap_limit="128m", pids_limit=64, environment={"SECRET": "s"})


@pytest.mark.docker
def test_the_launcher_creates_starts_stops_and_removes_a_run_container(launch_proxy: str, launch_env: RunPolicy,
                                                                       docker_client: Any) -> None:
    import docker

    client = docker.DockerClient(base_url=launch_proxy, timeout=30)
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    container = client.containers.create(**hardened_kwargs(launch_env, run_id))
    container.start()
    seen = client.containers.get(container.id)
    for _ in range(50):
        seen.reload()
        if seen.status == "running" or seen.status == "exited":
            break
    assert seen.status == "running", seen.attrs["State"]
    assert seen.attrs["Config"]["Env"] == []  # inspections never show the env (secrets)
    real = docker_client.containers.get(container.id).attrs
    assert real["HostConfig"]["CapDrop"] == ["ALL"] and real["HostConfig"]["ReadonlyRootfs"] is True
    assert real["Config"]["User"] == "10001:10001" and list(real["NetworkSettings"]["Networks"]) == [launch_env.network]
    seen.stop(timeout=2)
    assert client.containers.get(container.id).status == "exited"
    assert client.info()["NCPU"] >= 1 and client.ping()
    seen.remove(force=True)
    assert container.id not in {c.id for c in docker_client.containers.list(all=True)}
    client.close()


def test_the_command_line_serves_both_views(tmp_path: Any) -> None:
    require(os.path.exists(SOCKET), f"Docker socket {SOCKET}")
    process = subprocess.Popen(
        [sys.executable, "-m", "e2i_pipelines.scaler.engine_proxy", "--listen", "127.0.0.1:0",
         "--launch-listen", "localhost:0", "--run-image", IMAGE, "--run-network", "n_runs",
         "--run-label", "e2i.stack=n", "--data-volume", "n_data", "--socket", SOCKET],
        stdout=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline(), process.stdout.readline()]  # type: ignore[union-attr]
        ports = {line.split("(")[1].split(")")[0]: int(line.split(" on ")[1].split(" ")[0].rsplit(":", 1)[1])
                 for line in lines}
        assert "127.0.0.1:" in lines[1]  # the name was resolved to the address it listens on
        status, body = raw(f"tcp://127.0.0.1:{ports['launch']}", "POST", "/containers/create")
        assert status == 403 and "refused by the engine proxy" in json.loads(body)["message"]
        status, body = raw(f"tcp://127.0.0.1:{ports['read-only']}", "POST", "/containers/create")
        assert status == 403 and "read-only" in json.loads(body)["message"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    half = subprocess.run([sys.executable, "-m", "e2i_pipelines.scaler.engine_proxy", "--socket", SOCKET,
                           "--launch-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert half.returncode == 2 and "--run-image" in half.stderr
