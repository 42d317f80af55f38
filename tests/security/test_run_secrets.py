"""Attack: read the instance role's Postgres password from a run container's metadata or environment.

Anyone who may inspect containers (``docker inspect``, the engine proxy's read views, the
monitoring) sees ``Config.Env`` and ``Config.Cmd``. A real run through TieredDockerRunLauncher on
the real engine and a real Postgres role with a strong password (scram on 127.0.0.1, so the run
only works with the right one), configured as the repository's ``dagster.yaml`` is: storage
settings are ``env:`` references, the launcher forwards ``DAGSTER_PG_PASSWORD_FILE`` and binds
the secret file read-only at /run/secrets; the image's entrypoint
(``python -m e2i_pipelines.core.secrets``) turns it into a 0600 libpq password file on the
container's /tmp (PGPASSFILE; DAGSTER_PG_PASSWORD set empty, so Dagster's URL has no password).
The run succeeds, the password appears nowhere in the container's inspect document, and no
process of the running container has it in its environment (/proc/<pid>/environ, read with
``docker exec`` while the run holds its step). The units: the pgpass lines (escaped, bound to the
instance's host, port and user), a real Postgres login through them with an empty password, the
daemon's copy for run containers (E2I_RUN_SECRETS_DIR), errors that name the variable only.

The object store's secret key the same way: an AWS credentials file (key id + key) that the
entrypoint writes for services and the daemon publishes for run containers
(``AWS_SHARED_CREDENTIALS_FILE``); botocore, s3fs and the storage layer reach a real S3 API (moto
on loopback) from it, in a process on this host and in the image on the real engine, with the
key in no environment and no inspect document.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRunStatus

from e2i_pipelines.core.secrets import export_file_secrets, pgpass_lines, publish_run_secrets
from tests.conftest import PG_HOST, PG_PORT, _pg_connect, require
from tests.launcher.conftest import e2i_image  # noqa: F401 - fixture
from tests.launcher.harness import IN_PROCESS, LauncherHarness, instance_sections, probe_config
from tests.support.dagster_processes import REPO_ROOT

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
SECRET_PATH = "/run/secrets/dagster_pg_password"
RUN_UID = 10001
"""The image's non-root user: run containers and their processes."""
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
    secret.chmod(0o600)  # as scripts/start_services.sh makes it: the run user's only
    os.chown(secret, RUN_UID, RUN_UID)
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
        run_id = harness.launch("probe_light_job", {**probe_config("light", hold_seconds=20), **IN_PROCESS})
        harness.wait_for_step_start(run_id)
        environs = process_environments(docker_client.containers.get(harness.container_id(run_id)))
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
    # Every process of the running run (the entrypoint's exec'd wrapper, the run worker, its step
    # process): no password in its environment; the run worker's has the empty variable and the
    # libpq password file instead.
    assert len(environs) >= 2, environs.keys()
    for command, environ in environs.items():
        assert run_role["password"].encode() not in environ, f"the password is in the environment of {command}"
    workers = [e for c, e in environs.items() if b"execute_run" in c]
    assert workers and all(b"\0DAGSTER_PG_PASSWORD=\0" in b"\0" + e and b"\0PGPASSFILE=/tmp/" in b"\0" + e
                           for e in workers)


def process_environments(container) -> dict[bytes, bytes]:
    """cmdline -> environ of every process in ``container`` (read as the run user, who owns them)."""
    script = ('for p in /proc/[0-9]*; do [ "$p" = /proc/$$ ] && continue; '
              'c=$(tr "\\0" " " < $p/cmdline 2>/dev/null) || continue; [ -n "$c" ] || continue; '
              'printf "%s\\n" "$c" | base64 -w0; printf " "; base64 -w0 < $p/environ; echo; done')
    result = container.exec_run(["sh", "-c", script], user=f"{RUN_UID}")
    assert result.exit_code == 0, result.output[-2000:]
    found = {}
    for line in result.output.decode().splitlines():
        command, _, environ = line.partition(" ")
        found[base64.b64decode(command)] = base64.b64decode(environ)
    return {c: e for c, e in found.items() if not c.startswith((b"sh -c", b"tr ", b"base64", b"cat "))}


# -- the libpq password file ----------------------------------------------------------------------
def test_pgpass_lines_escape_and_bind_to_the_instance_server_and_user() -> None:
    env = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "e2i:dag"}
    assert pgpass_lines("p:w\\x", env, "DAGSTER_PG") == "db.internal:5432:*:e2i\\:dag:p\\:w\\\\x\n"
    sock = pgpass_lines("pw", {"DAGSTER_PG_HOST": "/var/run/postgresql"}, "DAGSTER_PG")
    assert sock == "/var/run/postgresql:*:*:*:pw\nlocalhost:*:*:*:pw\n"
    with pytest.raises(RuntimeError, match="line break") as refused:
        pgpass_lines("a\nb", env, "DAGSTER_PG")
    assert "a\nb" not in str(refused.value)


def test_export_writes_a_private_pgpass_and_leaves_the_variable_empty(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2-secret\n")
    env = {"DAGSTER_PG_PASSWORD_FILE": str(secret), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432",
           "DAGSTER_PG_USERNAME": "u", "OTHER_TOKEN_FILE": str(secret), "TMPDIR": str(tmp_path)}
    assert export_file_secrets(env, secrets_dir=None) == ["DAGSTER_PG_PASSWORD", "OTHER_TOKEN"]
    assert env["DAGSTER_PG_PASSWORD"] == "" and env["OTHER_TOKEN"] == "hunter2-secret"
    passfile = Path(env["PGPASSFILE"])
    assert passfile.parent == tmp_path and passfile.read_text() == "127.0.0.1:5432:*:u:hunter2-secret\n"
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    # Again (the run worker after the entrypoint): the same file, nothing new, still empty.
    before = sorted(tmp_path.iterdir())
    assert export_file_secrets(env, secrets_dir=None) == ["DAGSTER_PG_PASSWORD"]
    assert env["PGPASSFILE"] == str(passfile) and sorted(tmp_path.iterdir()) == before


def test_an_unwritable_temp_dir_names_the_variable_not_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2-secret")
    with pytest.raises(RuntimeError, match="DAGSTER_PG_PASSWORD_FILE: cannot write the libpq password file") as err:
        export_file_secrets({"DAGSTER_PG_PASSWORD_FILE": str(secret), "TMPDIR": str(tmp_path / "absent")},
                            secrets_dir=None)
    assert "hunter2" not in str(err.value)


def test_publish_copies_the_instance_password_for_runs(tmp_path: Path) -> None:
    secret = tmp_path / "dagster_pg_password"
    secret.write_text("hunter2-secret")
    out = tmp_path / "run-secrets"
    out.mkdir()
    assert publish_run_secrets(str(out), {"DAGSTER_PG_PASSWORD_FILE": str(secret)}) == ["DAGSTER_PG_PASSWORD"]
    copied = out / "dagster_pg_password"
    assert copied.read_text() == "hunter2-secret\n" and stat.S_IMODE(copied.stat().st_mode) == 0o400
    assert publish_run_secrets(str(out), {"DAGSTER_PG_PASSWORD_FILE": str(secret)})  # a restart replaces it
    assert sorted(p.name for p in out.iterdir()) == ["dagster_pg_password"]
    with pytest.raises(RuntimeError, match="E2I_RUN_SECRETS_DIR: cannot publish DAGSTER_PG_PASSWORD_FILE"):
        publish_run_secrets(str(tmp_path / "absent"), {"DAGSTER_PG_PASSWORD_FILE": str(secret)})


@pytest.mark.postgres
def test_the_entrypoint_logs_in_through_the_pgpass_with_no_password_in_its_environment(
        run_role: dict, tmp_path: Path) -> None:
    """The container command form on this host: the exec'd program has an empty
    DAGSTER_PG_PASSWORD, its /proc/self/environ holds no password, and Dagster's own URL (no
    password) logs in as the role through libpq's password file."""
    secret = tmp_path / "pw"
    secret.write_text(run_role["password"] + "\n")
    probe = (
        "import os, sqlalchemy\n"
        "from dagster_postgres.utils import get_conn_string\n"
        "env = open('/proc/self/environ', 'rb').read()\n"
        f"assert {run_role['password']!r}.encode() not in env, 'password in environ'\n"
        "assert os.environ['DAGSTER_PG_PASSWORD'] == ''\n"
        "url = get_conn_string(os.environ['DAGSTER_PG_USERNAME'], os.environ['DAGSTER_PG_PASSWORD'],\n"
        "    os.environ['DAGSTER_PG_HOST'], os.environ['DAGSTER_PG_DB'], os.environ['DAGSTER_PG_PORT'],\n"
        "    scheme='postgresql+psycopg2')\n"
        "assert ':@' not in url, 'a password in the URL'\n"
        "with sqlalchemy.create_engine(url).connect() as c:\n"
        "    print('AS', c.exec_driver_sql('select current_user').scalar())\n")
    base = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path), "DAGSTER_PG_USERNAME": run_role["username"],
            "DAGSTER_PG_HOST": str(run_role["hostname"]), "DAGSTER_PG_PORT": str(run_role["port"]),
            "DAGSTER_PG_DB": run_role["db_name"]}
    # The command form trusts /run/secrets only, so this host's file reaches it through the
    # function the command runs; a wrong password (no pgpass) must fail to log in.
    wrapper = ("import os, sys; from e2i_pipelines.core.secrets import export_file_secrets; "
               "export_file_secrets(secrets_dir=None); os.execvp(sys.executable, [sys.executable, '-c', sys.argv[1]])")
    done = subprocess.run([sys.executable, "-c", wrapper, probe], capture_output=True, text=True, timeout=120,
                          env={**base, "DAGSTER_PG_PASSWORD_FILE": str(secret)}, cwd=REPO_ROOT)
    assert done.returncode == 0 and f"AS {run_role['username']}" in done.stdout, done.stderr[-2000:]
    assert run_role["password"] not in done.stdout + done.stderr
    empty = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                           env={**base, "DAGSTER_PG_PASSWORD": ""}, cwd=REPO_ROOT)
    assert empty.returncode != 0 and "password" in empty.stderr.lower()


# -- the object store's secret key: an AWS credentials file, never a variable ----------------------
AWS_SECRET_PATH = "/run/secrets/s3_secret_access_key"
RUN_CREDENTIALS = "/run/secrets/aws_credentials"
S3_PROBE = (
    "import hashlib, json, os, boto3\n"
    "from e2i_pipelines.core import storage\n"
    "environ = open('/proc/self/environ', 'rb').read().decode(errors='replace')\n"
    "creds = boto3.Session().get_credentials()\n"
    "(storage.to_path(os.environ['E2I_STORAGE_URL']) / 'probe.txt').write_text('written')\n"
    "print(json.dumps({'method': creds.method, 'key_id': creds.access_key, 'environ': environ,\n"
    "    'secret_sha': hashlib.sha256(creds.secret_key.encode()).hexdigest()}))\n")
"""Resolves credentials as every S3 client does (botocore's chain), writes through the storage
layer (s3fs), and reports its own environment and a digest of the secret it found."""


def _aws_env(tmp_path: Path, key_id: str = "AKIDTEST", secret: str = "s3cr3t-key-value") -> dict[str, str]:
    path = tmp_path / "s3_secret_access_key"
    path.write_text(secret + "\n")
    return {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY_FILE": str(path), "TMPDIR": str(tmp_path)}


def _probe_result(output: str, secret: str, key_id: str) -> dict:
    result = json.loads(output.strip().splitlines()[-1])
    assert secret not in result["environ"], "the secret key is in the process environment"
    assert "AWS_SECRET_ACCESS_KEY=" not in result["environ"] and "AWS_ACCESS_KEY_ID=" not in result["environ"]
    assert result["method"] == "shared-credentials-file" and result["key_id"] == key_id
    assert result["secret_sha"] == hashlib.sha256(secret.encode()).hexdigest()
    return result


def test_export_writes_a_private_aws_credentials_file_and_no_key_variable(tmp_path: Path) -> None:
    env = _aws_env(tmp_path)
    token = tmp_path / "token"
    token.write_text("session-tok\n")
    env["AWS_SESSION_TOKEN_FILE"] = str(token)
    assert export_file_secrets(env, secrets_dir=None) == ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"} & set(env)
    creds = Path(env["AWS_SHARED_CREDENTIALS_FILE"])
    assert creds.parent == tmp_path and stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert creds.read_text() == ("[default]\naws_access_key_id = AKIDTEST\n"
                                 "aws_secret_access_key = s3cr3t-key-value\naws_session_token = session-tok\n")
    # Again (the run worker after the entrypoint): the same file, nothing new, and the file's
    # variable is botocore's, never read into AWS_SHARED_CREDENTIALS.
    before = sorted(tmp_path.iterdir())
    export_file_secrets(env, secrets_dir=None)
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == str(creds) and sorted(tmp_path.iterdir()) == before
    assert "AWS_SHARED_CREDENTIALS" not in env
    run = {"AWS_SHARED_CREDENTIALS_FILE": RUN_CREDENTIALS, "AWS_CONFIG_FILE": "/run/secrets/aws_config"}
    assert export_file_secrets(run) == [] and set(run) == {"AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"}


def test_a_file_named_by_another_node_is_replaced_by_a_local_one(tmp_path: Path) -> None:
    """A Ray job may inherit PGPASSFILE/AWS_SHARED_CREDENTIALS_FILE naming the launcher's /tmp:
    the worker writes its own from the node's secret files instead of pointing at nothing."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2-secret")
    env = {**_aws_env(tmp_path), "DAGSTER_PG_PASSWORD_FILE": str(secret),
           "PGPASSFILE": "/nonexistent/e2i-pgpass", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/e2i-aws"}
    export_file_secrets(env, secrets_dir=None)
    assert Path(env["PGPASSFILE"]).parent == tmp_path and "hunter2-secret" in Path(env["PGPASSFILE"]).read_text()
    assert Path(env["AWS_SHARED_CREDENTIALS_FILE"]).parent == tmp_path


def test_aws_credentials_errors_name_the_variable_never_a_value(tmp_path: Path) -> None:
    env = _aws_env(tmp_path)
    del env["AWS_ACCESS_KEY_ID"]
    with pytest.raises(RuntimeError, match="AWS_SECRET_ACCESS_KEY_FILE: AWS_ACCESS_KEY_ID is not set") as err:
        export_file_secrets(env, secrets_dir=None)
    assert "s3cr3t" not in str(err.value) and "AWS_SHARED_CREDENTIALS_FILE" not in env
    broken = _aws_env(tmp_path, key_id="AKID\n[evil]")
    with pytest.raises(RuntimeError, match="aws_access_key_id cannot go to an AWS credentials file") as err:
        export_file_secrets(broken, secrets_dir=None)
    assert "evil" not in str(err.value)
    empty = _aws_env(tmp_path, secret="")  # no key (an IAM role): nothing written, nothing moved
    assert export_file_secrets(empty, secrets_dir=None) == ["AWS_SECRET_ACCESS_KEY"]
    assert "AWS_SHARED_CREDENTIALS_FILE" not in empty and empty["AWS_ACCESS_KEY_ID"] == "AKIDTEST"


def test_publish_writes_the_run_credentials_file_and_drops_it_with_the_key(tmp_path: Path) -> None:
    out = tmp_path / "run-secrets"
    out.mkdir()
    env = _aws_env(tmp_path)
    assert publish_run_secrets(str(out), env) == ["AWS_SECRET_ACCESS_KEY"]
    creds = out / "aws_credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o400
    assert creds.read_text() == "[default]\naws_access_key_id = AKIDTEST\naws_secret_access_key = s3cr3t-key-value\n"
    Path(env["AWS_SECRET_ACCESS_KEY_FILE"]).write_text("")  # the key removed: so is the run's file
    assert publish_run_secrets(str(out), env) == [] and list(out.iterdir()) == []


def test_storage_leaves_a_credentials_file_to_botocore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from e2i_pipelines.core import storage

    monkeypatch.setenv("E2I_STORAGE_URL", "s3://bucket/x")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY_FILE", str(_aws_env(tmp_path)["AWS_SECRET_ACCESS_KEY_FILE"]))
    options = storage.storage_options()
    assert not {"key", "secret", "token"} & set(options)  # no id: the entrypoint moved both to a file


def test_shipped_compose_launcher_forwards_a_credentials_file_not_the_key() -> None:
    config = yaml.safe_load((REPO_ROOT / "docker" / "dagster.compose.yaml").read_text())["run_launcher"]["config"]
    names = {v.split("=")[0]: v for v in config["env_vars"]}
    assert names["AWS_SHARED_CREDENTIALS_FILE"] == f"AWS_SHARED_CREDENTIALS_FILE={RUN_CREDENTIALS}"
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY_FILE", "AWS_ACCESS_KEY_ID"} & set(names)
    assert "e2i_run_secrets:/run/secrets:ro" in config["container_kwargs"]["volumes"]


def test_a_process_reaches_s3_from_the_credentials_file_with_no_key_in_its_environment(tmp_path: Path) -> None:
    """The entrypoint's export on this host, then S3 through botocore's chain and the storage
    layer on a real S3 API (moto on loopback): the write lands, the key is in no environment."""
    from tests.support.s3 import moto_server

    secret, key_id = secrets.token_urlsafe(24), "AKID" + secrets.token_hex(6).upper()
    wrapper = ("import os, sys; from e2i_pipelines.core.secrets import export_file_secrets; "
               "export_file_secrets(secrets_dir=None); os.execvp(sys.executable, [sys.executable, '-c', sys.argv[1]])")
    with moto_server() as s3:
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **_aws_env(tmp_path, key_id, secret),
               "E2I_STORAGE_URL": s3.url, "E2I_S3_ENDPOINT_URL": s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
        done = subprocess.run([sys.executable, "-c", wrapper, S3_PROBE], capture_output=True, text=True,
                              timeout=180, env=env, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        _probe_result(done.stdout, secret, key_id)
        assert s3.keys() == ["e2i/probe.txt"]
        # Without the file the same probe has no credentials: the file is what authenticated.
        bare = {k: v for k, v in env.items() if not k.startswith("AWS_SECRET")}
        failed = subprocess.run([sys.executable, "-c", S3_PROBE], capture_output=True, text=True, timeout=180,
                                env={**bare, "AWS_ACCESS_KEY_ID": ""}, cwd=REPO_ROOT)
        assert failed.returncode != 0 and secret not in failed.stdout + failed.stderr


@pytest.mark.parametrize("form", ["run", "service"])
def test_containers_reach_s3_with_the_key_only_as_a_file(form: str, e2i_image: str, docker_client,  # noqa: F811
                                                          tmp_path: Path) -> None:
    """The image on the real engine. ``run``: a run container as the compose launcher makes it,
    the credentials file the daemon published bound read-only at /run/secrets. ``service``: a
    service's Docker secret (AWS_SECRET_ACCESS_KEY_FILE + AWS_ACCESS_KEY_ID), turned into a
    credentials file by the entrypoint. Both write to a real S3 API; neither the inspect
    document nor the process environment holds the key."""
    from tests.support.s3 import moto_server

    secret, key_id = secrets.token_urlsafe(24), "AKID" + secrets.token_hex(6).upper()
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    given = _aws_env(tmp_path, key_id, secret)
    if form == "run":
        publish_run_secrets(str(folder), given)
        env = {"AWS_SHARED_CREDENTIALS_FILE": RUN_CREDENTIALS}
    else:
        Path(given["AWS_SECRET_ACCESS_KEY_FILE"]).rename(folder / "s3_secret_access_key")
        env = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY_FILE": AWS_SECRET_PATH}
    for path in folder.iterdir():
        os.chown(path, RUN_UID, RUN_UID)
    with moto_server() as s3:
        env.update(E2I_STORAGE_URL=s3.url, E2I_S3_ENDPOINT_URL=s3.endpoint, AWS_DEFAULT_REGION="us-east-1",
                   AWS_EC2_METADATA_DISABLED="true")
        container = docker_client.containers.run(
            e2i_image, ["python", "-c", S3_PROBE], environment=env, network_mode="host", detach=True,
            user=f"{RUN_UID}:{RUN_UID}", read_only=True, tmpfs={"/tmp": "rw,size=64m"},
            cap_drop=["ALL"], security_opt=["no-new-privileges"],
            volumes={str(folder): {"bind": "/run/secrets", "mode": "ro"}})
        try:
            status = container.wait(timeout=180)
            output = container.logs().decode(errors="replace")
            attrs = docker_client.api.inspect_container(container.id)
        finally:
            container.remove(force=True)
        assert status["StatusCode"] == 0, output[-2000:]
        _probe_result(output, secret, key_id)
        assert s3.keys() == ["e2i/probe.txt"]
    assert secret not in json.dumps(attrs), "the secret key is in the container's inspect document"
    assert not [item for item in attrs["Config"]["Env"] if item.startswith("AWS_SECRET_ACCESS_KEY=")]
