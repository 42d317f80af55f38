"""The compose file as docker-compose 1.29 resolves it: every service hardened the same way (no
capabilities, no-new-privileges, read-only root, non-root), the Docker socket only in the engine
proxy, run containers on a `runs` network with Postgres and MLflow only, passwords as Docker
secrets, only Caddy's ports published (loopback).
The Ray trial (docker-compose.ray.yml, profile ray): a head and one worker node per tier, hardened
alike, each worker sized as its tier in docker/dagster.ray.yaml plus the node's own overhead."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from e2i_pipelines.launcher.job_env import is_secret_name
from e2i_pipelines.launcher.profiles import parse_profiles
from e2i_pipelines.tiers import RAY_FANOUT_RESOURCE, TIER_NAMES, parse_bytes, ray_resource
from tests.conftest import require
from tests.stack.compose_stack import (
    COMPOSE_FILE,
    DATA_DIR,
    DEFAULT_SERVICES,
    INSTANCE_TEMPLATE,
    ComposeStack,
)
from tests.support.ray_cluster import NODE_OVERHEAD

SOCKET = "/var/run/docker.sock"
RAY_COMPOSE_FILE = COMPOSE_FILE.with_name("docker-compose.ray.yml")
RAY_INSTANCE = COMPOSE_FILE.with_name("dagster.ray.yaml")
RAY_SERVICES = {"ray-head", *(f"ray-{tier}" for tier in TIER_NAMES)}
RAY_CLIENTS = {"daemon", "webserver", "code-server"}
"""Services that talk to the Ray head (launcher, terminate, scaler sensor)."""
RAY_TOKEN = "/run/secrets/ray_auth_token"
S3_KEY = "s3_secret_access_key"
"""The object store's secret key (empty file without one): every service that reads or writes storage."""


@pytest.fixture(scope="module")
def compose_env() -> Iterator[ComposeStack]:
    """A throw-away project (own env file) both configs below are resolved for."""
    require(shutil.which("docker-compose") is not None, "docker-compose (apt-get install docker-compose)")
    require(Path(SOCKET).exists(), f"Docker socket {SOCKET}")
    stack = ComposeStack(workdir=Path(tempfile.mkdtemp(prefix="e2i-compose-config-")))
    yield stack
    shutil.rmtree(stack.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def config(compose_env: ComposeStack) -> dict:
    return yaml.safe_load(compose_env.compose("config").stdout)


@pytest.fixture(scope="module")
def ray_config(compose_env: ComposeStack) -> dict:
    """The stack with the Ray trial: both files, profile ray."""
    cmd = ["docker-compose", "-f", str(COMPOSE_FILE), "-f", str(RAY_COMPOSE_FILE),
           "--env-file", str(compose_env.env_file), "-p", compose_env.project, "--profile", "ray",
           "config"]
    return yaml.safe_load(compose_env.run(cmd, timeout=120, check=True).stdout)


@pytest.fixture(scope="module")
def ray_tiers() -> dict:
    """Tier profiles of the Ray instance config, parsed as the launcher parses them."""
    launcher = yaml.safe_load(RAY_INSTANCE.read_text())["run_launcher"]["config"]
    return {tier.value: profile for tier, profile in parse_profiles(launcher["tiers"]).items()}


def _normalised(service: dict) -> dict:
    """A service as merging files renders it alike: network names, volumes, ports in any order."""
    return {**service, "networks": sorted(service.get("networks", [])),
            "volumes": sorted(service.get("volumes", [])),
            "ports": sorted(map(str, service.get("ports", []))),
            "secrets": sorted(secret_names(service))}


def secret_names(service: dict) -> set[str]:
    """Names of the Docker secrets a service holds (short or long syntax)."""
    return {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}


def flags(service: dict) -> dict[str, str]:
    """``--name=value`` arguments of a service's command (``--block`` -> "")."""
    return dict(arg.removeprefix("--").partition("=")[::2] for arg in service["command"]
                if arg.startswith("--"))


def test_every_service_is_hardened(config: dict) -> None:
    services = config["services"]
    assert set(services) == DEFAULT_SERVICES
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
        assert float(service["cpus"]) > 0 and service["mem_limit"], name
        assert service["logging"]["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= set(service["logging"]["options"]), name
        assert service["user"] not in ("", "root", "0", "0:0"), name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy", name


def test_least_privilege_on_every_service(config: dict) -> None:
    for name, service in config["services"].items():
        assert service["cap_drop"] == ["ALL"], name
        assert not service.get("cap_add"), name  # none needs one back
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["read_only"] is True, name
        assert any(str(t).startswith("/tmp") for t in service["tmpfs"]), name
        assert str(service["user"]).partition(":")[0] not in ("", "root", "0"), name
        assert not service.get("privileged") and not service.get("devices"), name
        assert service.get("network_mode") is None and service.get("pid") is None, name
        assert not any(str(v).startswith("/") or "type: bind" in str(v) and "source: /" in str(v)
                       for v in service.get("volumes", []) if SOCKET in str(v) and name != "engine-proxy"), name


def test_socket_only_in_the_engine_proxy(config: dict) -> None:
    services = config["services"]
    with_socket = {name for name, service in services.items()
                   if any(SOCKET in str(volume) for volume in service.get("volumes", []))}
    assert with_socket == {"engine-proxy"}
    proxy_socket = [v for v in services["engine-proxy"]["volumes"] if SOCKET in str(v)]
    assert all(str(v).endswith(":ro") or (isinstance(v, dict) and v.get("read_only"))
               for v in proxy_socket), proxy_socket
    with_docker_group = {name for name, service in services.items() if service.get("group_add")}
    assert with_docker_group == {"engine-proxy"}


def test_daemon_and_webserver_launch_through_the_proxys_launch_view(compose_env: ComposeStack,
                                                                      config: dict) -> None:
    services = config["services"]
    command = services["engine-proxy"]["command"]
    args = dict(zip(command, [*command[1:], ""], strict=True))
    host, _, port = args["--launch-listen"].rpartition(":")
    assert services["engine-proxy"]["networks"]["launch"]["aliases"] == [host]
    for name in ("daemon", "webserver"):
        assert services[name]["environment"]["DOCKER_HOST"] == f"tcp://{host}:{port}", name
        assert "launch" in services[name]["networks"], name
    on_launch = {name for name, s in services.items() if "launch" in s["networks"]}
    assert on_launch == {"daemon", "webserver", "engine-proxy"}
    assert config["networks"]["launch"]["internal"] is True
    project = compose_env.project
    assert args["--run-image"] == services["daemon"]["image"] == compose_env.image
    assert args["--run-network"] == f"{project}_runs" == services["daemon"]["environment"]["E2I_RUN_NETWORK"]
    assert args["--run-label"] == f"e2i.stack={project}"
    assert args["--data-volume"] == f"{project}_data" and args["--data-dir"] == DATA_DIR
    assert args["--secrets-source"] == f"{project}_run_secrets" and args["--secrets-dir"] == "/run/secrets"
    assert [v for v in map(str, services["daemon"]["volumes"]) if "/run/e2i/run-secrets" in v]
    assert services["daemon"]["environment"]["E2I_RUN_SECRETS_DIR"] == "/run/e2i/run-secrets"
    assert config["volumes"]["run-secrets"]["driver_opts"]["type"] == "tmpfs"


def test_run_containers_are_hardened_as_the_proxy_requires(compose_env: ComposeStack) -> None:
    """The launcher's container kwargs (rendered for the project) pass the proxy's own check."""
    from e2i_pipelines.scaler.engine_policy import RunPolicy
    from tests.scaler.test_engine_proxy import run_body

    launcher = yaml.safe_load(compose_env.instance_file.read_text())["run_launcher"]["config"]
    kwargs = launcher["container_kwargs"]
    assert kwargs["cap_drop"] == ["ALL"] and kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["read_only"] is True and set(kwargs["tmpfs"]) == {"/tmp"}
    assert kwargs["user"] == "10001:10001"
    project = compose_env.project
    policy = RunPolicy(image="e2i:local", network=f"{project}_runs", labels={"e2i.stack": project},
                       data_volume=f"{project}_data", secrets_source=f"{project}_run_secrets")
    assert f"{project}_run_secrets:/run/secrets:ro" in kwargs["volumes"]
    assert "DAGSTER_PG_PASSWORD_FILE=/run/secrets/dagster_pg_password" in launcher["env_vars"]
    assert "DAGSTER_PG_PASSWORD" not in launcher["env_vars"]
    body = run_body(Binds=kwargs["volumes"], NetworkMode=f"{project}_runs", Tmpfs=kwargs["tmpfs"],
                    Labels={"dagster/run_id": "r", **kwargs["labels"]}, Image="e2i:local",
                    NetworkingConfig={f"{project}_runs": None})
    policy.check_create(body)


def test_runs_network_reaches_postgres_and_mlflow_only(config: dict) -> None:
    services = config["services"]
    on_runs = {name for name, s in services.items() if "runs" in s["networks"]}
    assert on_runs == {"postgres", "mlflow", "s3"}  # s3: the profile-s3 trial store
    assert config["networks"]["runs"]["internal"] is True
    assert config["networks"]["runs"]["name"].endswith("_runs")


def test_passwords_are_docker_secrets_one_role_each(compose_env: ComposeStack, config: dict) -> None:
    services = config["services"]
    rendered = yaml.safe_dump(config)
    for name in ("postgres_password", "dagster_pg_password", "api_pg_password", "api_database_url"):
        assert compose_env.secret(name) not in rendered, name  # only file paths in the config
    wanted = {"postgres": {"postgres_password", "dagster_pg_password", "api_pg_password", "mlflow_pg_password",
                           "exporter_pg_password"},
              "daemon": {"dagster_pg_password", S3_KEY}, "webserver": {"dagster_pg_password", S3_KEY},
              "code-server": {"dagster_pg_password", S3_KEY}, "webserver-viewer": {"dagster_pg_password", S3_KEY},
              "api": {"api_database_url", "oidc_client_secret", "ui_session_secret", S3_KEY}, "caddy": set(),
              "mlflow": {"mlflow_database_url", S3_KEY}, "engine-proxy": set(), "s3": set()}
    for name, service in services.items():
        held = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        assert held == wanted[name], name
        env = service.get("environment", {})
        assert not any("PASSWORD" in key and not key.endswith("_FILE") for key in env), name
    assert services["daemon"]["environment"]["DAGSTER_PG_USERNAME"] == "e2i_dagster"
    assert compose_env.secret("api_database_url").startswith("postgresql://e2i_api:")
    assert oct((compose_env.workdir / "secrets").stat().st_mode)[-3:] == "700"


def test_code_server_reads_the_engine_through_the_proxy_only(config: dict) -> None:
    services = config["services"]
    command = services["engine-proxy"]["command"]
    proxy_port = command[command.index("--listen") + 1].rpartition(":")[2]
    assert services["code-server"]["environment"]["DOCKER_HOST"] == f"tcp://engine-proxy:{proxy_port}"
    assert set(services["code-server"]["networks"]) == {"backend", "engine"}
    assert set(services["engine-proxy"]["networks"]) == {"engine", "launch"}
    assert not services["engine-proxy"].get("ports")
    assert config["networks"]["engine"]["internal"] is True
    on_engine = {name for name, s in services.items() if "engine" in s["networks"]}
    assert on_engine == {"code-server", "engine-proxy"}


def test_networks_and_published_ports(config: dict) -> None:
    services = config["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"caddy"}  # the API and the webservers are reached through Caddy only
    for ports in published.values():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), ports
    on_frontend = {name for name, s in services.items() if "frontend" in s["networks"]}
    assert on_frontend == {"api", "webserver", "webserver-viewer", "caddy"}
    assert "--read-only" in services["webserver-viewer"]["command"]
    assert not {"runs", "launch"} & set(services["webserver-viewer"]["networks"])
    assert config["networks"]["backend"]["internal"] is True


def test_missing_secret_is_refused() -> None:
    require(shutil.which("docker-compose") is not None, "docker-compose")
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "empty.env"
        env.write_text("COMPOSE_PROJECT_NAME=e2iconfigcheck\n")
        result = subprocess.run(["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(env), "config"],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "POSTGRES_USER" in result.stderr or "POSTGRES_PASSWORD" in result.stderr


def test_ray_file_adds_only_the_ray_services_behind_the_profile(config: dict,
                                                                 ray_config: dict) -> None:
    assert set(config["services"]) == DEFAULT_SERVICES
    assert set(ray_config["services"]) == DEFAULT_SERVICES | RAY_SERVICES
    for name in DEFAULT_SERVICES:
        service = ray_config["services"][name]
        if name in RAY_CLIENTS:  # they join the ray network and get the token, nothing else
            assert "ray" in service["networks"] and "ray_auth_token" in secret_names(service), name
            service = {**service, "networks": [n for n in service["networks"] if n != "ray"],
                       "secrets": sorted(secret_names(service) - {"ray_auth_token"})}
        assert _normalised(service) == _normalised(config["services"][name]), name
    for name in RAY_SERVICES:
        assert ray_config["services"][name]["profiles"] == ["ray"], name


def test_ray_services_are_hardened_like_the_others(ray_config: dict) -> None:
    services = ray_config["services"]
    for name in RAY_SERVICES:
        service = services[name]
        assert service["image"] == services["daemon"]["image"], name
        assert service["user"] == services["daemon"]["user"] == "10001:10001", name
        assert service["init"] is True and service["restart"] == "unless-stopped", name
        assert service["logging"] == services["daemon"]["logging"], name
        assert service["healthcheck"]["test"][:2] == ["CMD", "python"], name
        assert float(service["cpus"]) > 0, name
        assert parse_bytes(service["mem_limit"]) > 0, name
        assert service["memswap_limit"] == service["mem_limit"], name
        assert 0 < service["pids_limit"] <= 4096, name
        store = parse_bytes(flags(service)["object-store-memory"])
        assert parse_bytes(service["shm_size"]) > store, name  # else Ray's store falls back to /tmp
        assert not any(SOCKET in str(volume) for volume in service.get("volumes", [])), name
        assert service["environment"]["RAY_USAGE_STATS_ENABLED"] == "0", name
        assert service["environment"]["RAY_task_oom_retries"] == "1", name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy", name


def test_ray_services_publish_nothing_and_stay_on_private_networks(ray_config: dict) -> None:
    """Head on the internal `ray` network only, dashboard bound to its address there (not
    0.0.0.0); workers on `ray` and `runs` (Postgres, MLflow) like run containers; only the
    Dagster processes that talk to Ray join `ray`."""
    for name in RAY_SERVICES:
        service = ray_config["services"][name]
        assert not service.get("ports") and not service.get("expose"), name
        expected = ["ray"] if name == "ray-head" else ["ray", "runs"]
        assert sorted(service["networks"]) == expected, name
        assert service.get("network_mode") is None, name
    for name in ("ray", "runs", "backend"):
        assert ray_config["networks"][name]["internal"] is True, name
    on_ray = {n for n, s in ray_config["services"].items() if "ray" in s.get("networks", [])}
    assert on_ray == RAY_SERVICES | RAY_CLIENTS
    head = flags(ray_config["services"]["ray-head"])
    assert "head" in head and head["num-cpus"] == "0"
    assert head["dashboard-host"] == "ray-head"  # its own address on `ray`, never 0.0.0.0


def test_ray_token_auth_everywhere(ray_config: dict) -> None:
    """Every node runs with RAY_AUTH_MODE=token and the token as a Docker secret file; every Ray
    client gets the secret; the instance reads the token from that file, never inline."""
    services = ray_config["services"]
    assert ray_config["secrets"]["ray_auth_token"]["file"].endswith("/ray_auth_token")
    for name in RAY_SERVICES:
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == RAY_TOKEN, name
        assert "RAY_AUTH_TOKEN" not in env and "ray_auth_token" in secret_names(services[name]), name
    for name in RAY_CLIENTS:
        assert "ray_auth_token" in secret_names(services[name]), name
    launcher = yaml.safe_load(RAY_INSTANCE.read_text())["run_launcher"]["config"]
    assert launcher["auth_token_path"] == RAY_TOKEN


def test_ray_workers_are_sized_as_their_tier_plus_the_node_overhead(ray_config: dict,
                                                                     ray_tiers: dict) -> None:
    for tier in TIER_NAMES:
        service = ray_config["services"][f"ray-{tier}"]
        args = flags(service)
        profile = ray_tiers[tier]
        assert float(args["num-cpus"]) == float(service["cpus"]) == profile.cpus, tier
        assert int(args["memory"]) == parse_bytes(profile.memory), tier
        node = parse_bytes(profile.memory) + parse_bytes(NODE_OVERHEAD)
        assert parse_bytes(service["mem_limit"]) == node, tier
        assert args["node-name"] == service["environment"]["E2I_RAY_NODE_NAME"] == tier
        assert args["address"] == "ray-head:6379" and "block" in args, tier
        assert ray_resource(tier) in json.loads(args["resources"]), tier
        assert service["depends_on"] == {"ray-head": {"condition": "service_healthy"}}, tier


def test_only_the_heavy_node_offers_fan_out(ray_config: dict) -> None:
    offers = {name: json.loads(flags(ray_config["services"][name]).get("resources", "{}"))
              for name in RAY_SERVICES}
    assert offers["ray-head"] == {}
    assert {name for name, res in offers.items() if RAY_FANOUT_RESOURCE in res} == {"ray-heavy"}
    for tier in TIER_NAMES:
        assert set(offers[f"ray-{tier}"]) - {RAY_FANOUT_RESOURCE} == {ray_resource(tier)}, tier


def test_ray_workers_run_dagster_runs_like_run_containers(ray_config: dict) -> None:
    """Workers get the stack's Dagster env and data volume (their run workers write to Postgres
    and E2I_DATA_DIR); the head gets neither (it runs no run worker)."""
    services = ray_config["services"]
    daemon_env = services["daemon"]["environment"]
    instance = yaml.safe_load(RAY_INSTANCE.read_text())
    forwarded = instance["run_launcher"]["config"]["ray"]["env_vars"]
    # No engine access; no run-secrets volume to fill (a node reads its own secret file).
    daemon_env = {k: v for k, v in daemon_env.items() if k not in ("DOCKER_HOST", "E2I_RUN_SECRETS_DIR")}
    for tier in TIER_NAMES:
        service = services[f"ray-{tier}"]
        assert daemon_env.items() <= service["environment"].items(), tier
        assert "DOCKER_HOST" not in service["environment"], tier
        assert set(forwarded) <= set(service["environment"]), tier
        # The password is the node's own secret file, read by the run worker (never in a job).
        assert "dagster_pg_password" in secret_names(service), tier
        assert "DAGSTER_PG_PASSWORD" not in service["environment"], tier
        assert f"e2i-data:{DATA_DIR}:rw" in service["volumes"], tier
        # The kernel, not Ray's memory monitor, stops a run at its node's limit.
        assert service["environment"]["RAY_memory_monitor_refresh_ms"] == "0", tier
    head = services["ray-head"]
    assert "DAGSTER_PG_PASSWORD" not in head["environment"]
    assert not any(DATA_DIR in str(volume) for volume in head.get("volumes", []))


def test_ray_instance_config_is_the_compose_one_with_the_ray_launcher(ray_config: dict) -> None:
    compose_instance = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    ray_instance = yaml.safe_load(RAY_INSTANCE.read_text())
    launcher = ray_instance.pop("run_launcher")
    docker_launcher = compose_instance.pop("run_launcher")
    assert ray_instance == compose_instance
    assert (launcher["module"], launcher["class"]) == (
        "e2i_pipelines.launcher.tiered_ray_run_launcher", "TieredRayRunLauncher")
    head = flags(ray_config["services"]["ray-head"])
    assert launcher["config"]["ray"]["address"] == f"http://ray-head:{head['dashboard-port']}"
    # The same variables as run containers get, less the secrets (the nodes hold those as files).
    plain = [name for name in docker_launcher["config"]["env_vars"] if not is_secret_name(name)]
    assert launcher["config"]["ray"]["env_vars"] == plain
