"""Attack: read the instance role's Postgres password from a run container's metadata.

Anyone who may inspect containers (``docker inspect``, the engine proxy's read views, the
monitoring) sees ``Config.Env`` and ``Config.Cmd``. A real run through TieredDockerRunLauncher on
the real engine and a real Postgres role with a strong password (scram on 127.0.0.1, so the run
only works with the right one), configured as the repository's ``dagster.yaml`` is: storage
settings are ``env:`` references, the launcher forwards ``DAGSTER_PG_PASSWORD_FILE`` and binds
the secret file read-only at /run/secrets; the image's entrypoint
(``python -m e2i_pipelines.core.secrets``) reads it into the run's own process environment. The
run succeeds, and the password appears nowhere in the container's inspect document.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRunStatus

from tests.conftest import PG_HOST, PG_PORT, _pg_connect, require
from tests.launcher.conftest import e2i_image  # noqa: F401 - fixture
from tests.launcher.harness import IN_PROCESS, LauncherHarness, instance_sections, probe_config
from tests.support.dagster_processes import REPO_ROOT

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
SECRET_PATH = "/run/secrets/dagster_pg_password"
PG_VARS = ("DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_PORT")
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@pytest.fixture()
def run_role() -> Iterator[dict]:
    """A non-superuser role owning a fresh database, with a 48-hex-digit password."""
    try:
        admin = _pg_connect()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no postgres"
        require(False, f"PostgreSQL at {PG_HOST}:{PG_PORT} ({exc})")
    admin.autocommit = True
    tag = uuid.uuid4().hex[:10]
    role, db, password = f"sec_run_{tag}", f"sec_run_{tag}", secrets.token_hex(24)
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD %s', (password,))
        cur.execute(f'CREATE DATABASE "{db}" OWNER "{role}"')
    try:
        yield {"username": role, "password": password, "hostname": PG_HOST, "port": PG_PORT, "db_name": db}
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def shipped_launcher() -> dict:
    """The run launcher config of the repository's dagster.yaml."""
    return yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())["run_launcher"]["config"]


def test_shipped_instance_forwards_a_password_file_not_the_password() -> None:
    config = shipped_launcher()
    assert f"DAGSTER_PG_PASSWORD_FILE={SECRET_PATH}" in config["env_vars"]
    assert not [v for v in config["env_vars"] if v.split("=")[0] == "DAGSTER_PG_PASSWORD"]
    binds = [v for v in config["container_kwargs"]["volumes"] if v.split(":")[1] == SECRET_PATH]
    assert len(binds) == 1 and binds[0].endswith(":ro"), binds


def test_run_container_reads_the_password_from_a_file_never_from_its_env(
        e2i_image: str, docker_client, run_role: dict, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir(mode=0o755)
    secret = secret_dir / "dagster_pg_password"
    secret.write_text(run_role["password"] + "\n")
    secret.chmod(0o644)  # the image's non-root user reads it through the read-only bind
    values = dict(zip(PG_VARS, (run_role["username"], run_role["password"], run_role["hostname"],
                                run_role["db_name"], str(run_role["port"])), strict=True))
    for name, value in values.items():  # this process is the daemon: it holds the password
        monkeypatch.setenv(name, value)
    shipped = shipped_launcher()
    launcher = instance_sections(run_role)["run_launcher"]
    launcher["config"].update(  # the shipped Postgres variables; the secret bind from this host
        env_vars=[v for v in shipped["env_vars"] if v.startswith("DAGSTER_PG_")],
        container_kwargs={"volumes": [f"{secret}:{SECRET_PATH}:ro"]})
    storage = {"postgres": {"postgres_db": {
        "username": {"env": "DAGSTER_PG_USERNAME"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": {"env": "DAGSTER_PG_HOST"}, "db_name": {"env": "DAGSTER_PG_DB"},
        "port": {"env": "DAGSTER_PG_PORT"}, "scheme": "postgresql+psycopg2"}}}
    harness = LauncherHarness(tmp_path / "dagster_home", run_role,
                              sections={"storage": storage, "run_launcher": launcher})
    try:
        run_id = harness.launch("probe_light_job", {**probe_config("light"), **IN_PROCESS})
        run = harness.wait_for(run_id, FINISHED)
        assert run.status == DagsterRunStatus.SUCCESS, harness.log_text(run_id)
        attrs = docker_client.containers.get(harness.container_id(run_id)).attrs
    finally:
        harness.close()
    env = attrs["Config"]["Env"]
    assert f"DAGSTER_PG_PASSWORD_FILE={SECRET_PATH}" in env
    assert not [item for item in env if item.startswith("DAGSTER_PG_PASSWORD=")]
    assert run_role["password"] not in json.dumps(attrs), "the password is in the container's inspect document"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts[SECRET_PATH]["RW"] is False
