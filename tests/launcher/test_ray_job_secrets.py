"""No secret rides in a Ray job, and the Ray token comes from a file: the units.

The real cluster (token refused/accepted, the submitted job's runtime_env read back over the Jobs
API, a run that reaches Postgres with the password read on its node) is tests/ray/
test_ray_token_auth.py; here the pieces: which names are secrets, the run worker reading
``NAME_FILE`` on its node (a real wrapper process), the token's sources and the launcher's
runtime_env, including a ``dagster-ray/config`` tag that tries to add pip packages and env vars.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterEventType, instance_for_test
from dagster._core.test_utils import create_run_for_test

from e2i_pipelines.core.secrets import file_secret_names
from e2i_pipelines.launcher import ray_auth
from e2i_pipelines.launcher.job_env import is_secret_name, split_secrets
from e2i_pipelines.launcher.promotion import RAY_JOB_TAG
from e2i_pipelines.launcher.run_worker import worker_env
from e2i_pipelines.launcher.worker_exit import WORKER_MODULE
from e2i_pipelines.tiers import TIER_TAG

PASSWORD = "pg-secret-4f1c9b"  # noqa: S105 - a test value


@pytest.mark.parametrize("name", ["DAGSTER_PG_PASSWORD", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY",
                                  "E2I_API_KEYS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_TOKEN",
                                  "API_KEY", "GOOGLE_APPLICATION_CREDENTIALS_JSON"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "E2I_DATA_DIR",
                                  "MLFLOW_TRACKING_URI", "DAGSTER_PG_PASSWORD_FILE",
                                  "RAY_AUTH_TOKEN_PATH", "OMP_NUM_THREADS", "MONKEY"])
def test_plain_names(name):
    assert not is_secret_name(name)


def test_split_and_file_secret_names():
    kept, dropped = split_secrets({"DAGSTER_PG_PASSWORD": "x", "DAGSTER_PG_HOST": "pg", "A_TOKEN": "t"})
    assert kept == {"DAGSTER_PG_HOST": "pg"} and dropped == ["A_TOKEN", "DAGSTER_PG_PASSWORD"]
    env = {"DAGSTER_PG_PASSWORD_FILE": "/s/pg", "SSL_CERT_FILE": "/etc/ca.pem",
           "MLFLOW_TRACKING_TOKEN_FILE": "/s/t", "MLFLOW_TRACKING_TOKEN": "already set"}
    # The run worker's choice (core.secrets' one NAME_FILE reader): any file, secret names only.
    assert file_secret_names(env, secrets_dir=None, wanted=is_secret_name) == ["DAGSTER_PG_PASSWORD"]


def _secret_file(tmp_path, value: str = PASSWORD):
    path = tmp_path / "pg_password"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def test_worker_env_reads_the_password_file_on_the_node(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_PG_PASSWORD", raising=False)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD_FILE", str(_secret_file(tmp_path)))
    env = worker_env()  # the instance password goes to a libpq password file, never the environment
    assert env["DAGSTER_PG_PASSWORD"] == "" and Path(env["PGPASSFILE"]).read_text().endswith(f":{PASSWORD}\n")


def test_unreadable_secret_file_names_the_variable_not_the_content(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_PG_PASSWORD", raising=False)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="DAGSTER_PG_PASSWORD_FILE: cannot read"):
        worker_env()


def _wrapper(env_extra: dict[str, str], code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_PG_PASSWORD", "PGPASSFILE"))}
    return subprocess.run([sys.executable, "-m", WORKER_MODULE, sys.executable, "-c", code],
                          env={**env, **env_extra}, capture_output=True, text=True, timeout=60)


def test_run_worker_child_gets_the_secret_from_its_file(tmp_path):
    done = _wrapper({"DAGSTER_PG_PASSWORD_FILE": str(_secret_file(tmp_path)), "TMPDIR": str(tmp_path)},
                    f"import os; assert os.environ['DAGSTER_PG_PASSWORD'] == ''; "
                    f"assert {PASSWORD!r}.encode() not in open('/proc/self/environ', 'rb').read(); "
                    f"assert open(os.environ['PGPASSFILE']).read().endswith(':{PASSWORD}\\n')")
    assert done.returncode == 0, done.stderr


def test_run_worker_refuses_to_start_without_its_secret_file(tmp_path):
    canary = tmp_path / "canary"
    done = _wrapper({"DAGSTER_PG_PASSWORD_FILE": str(tmp_path / "absent")},
                    f"open({str(canary)!r}, 'w')")
    assert done.returncode == 1 and not canary.exists()
    assert "DAGSTER_PG_PASSWORD_FILE: cannot read the secret file" in done.stderr
    assert "Traceback" not in done.stderr


# -- the token ------------------------------------------------------------------------------------
@pytest.fixture()
def no_token_env(monkeypatch):
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_FILE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_token_sources_in_order(tmp_path, no_token_env):
    config_file, env_file, path_file = (tmp_path / n for n in ("config", "env_file", "path"))
    for path in (config_file, env_file, path_file):
        path.write_text(f"token-of-{path.name}\n")
    assert ray_auth.auth_headers() == {}
    no_token_env.setenv("RAY_AUTH_TOKEN_PATH", str(path_file))
    assert ray_auth.read_token() == "token-of-path"
    no_token_env.setenv("RAY_AUTH_TOKEN_FILE", str(env_file))
    assert ray_auth.read_token() == "token-of-env_file"
    assert ray_auth.auth_headers(str(config_file)) == {"Authorization": "Bearer token-of-config"}


def test_token_file_errors_name_the_setting_never_the_content(tmp_path, no_token_env):
    with pytest.raises(ray_auth.RayAuthError, match="auth_token_path: cannot read the Ray token"):
        ray_auth.read_token(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    no_token_env.setenv("RAY_AUTH_TOKEN_PATH", str(empty))
    with pytest.raises(ray_auth.RayAuthError, match="RAY_AUTH_TOKEN_PATH: the Ray token file is empty"):
        ray_auth.read_token()


# -- the launcher's runtime_env -------------------------------------------------------------------
class _RecordingJobs:
    """Stands in for JobSubmissionClient: records what would be submitted."""

    def __init__(self) -> None:
        self.submitted: list[dict] = []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return kwargs["submission_id"]

    def get_job_info(self, submission_id: str):
        raise RuntimeError(f"Request failed with status code 404: Job {submission_id} does not exist.")


def test_launcher_forwards_no_secret_and_ignores_a_tags_runtime_env(tmp_path, monkeypatch):
    from e2i_pipelines.launcher.tiered_ray_run_launcher import TieredRayRunLauncher

    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PASSWORD)
    monkeypatch.setenv("DAGSTER_PG_HOST", "postgres")
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        launcher = TieredRayRunLauncher(
            address="http://127.0.0.1:1", env_vars=["DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST"],
            runtime_env={"env_vars": {"AWS_SECRET_ACCESS_KEY": "k", "E2I_DATA_DIR": "/d"}},
            tiers={"light": {"memory": "512m"}})
        launcher.register_instance(instance)
        jobs = _RecordingJobs()
        launcher.__dict__["client"] = jobs
        evil = {"runtime_env": {"pip": ["evil-package"], "working_dir": "https://x/evil.zip"},
                "env_vars": ["LD_PRELOAD=/tmp/evil.so"]}
        run = create_run_for_test(instance, job_name="probe_light_job",
                                  tags={TIER_TAG: "light", RAY_JOB_TAG: "dagster-run-x",
                                        "dagster-ray/config": json.dumps(evil)})
        launcher._launch_ray_job("dagster-run-x", "python -m x", run)
        runtime_env = jobs.submitted[0]["runtime_env"]
        assert set(runtime_env) == {"env_vars"}  # no pip, no working_dir from the tag
        env = runtime_env["env_vars"]
        assert env["DAGSTER_PG_HOST"] == "postgres" and env["E2I_DATA_DIR"] == "/d"
        assert "LD_PRELOAD" not in env and "DAGSTER_PG_PASSWORD" not in env
        assert "AWS_SECRET_ACCESS_KEY" not in env
        assert PASSWORD not in json.dumps(jobs.submitted[0])
        events = [e.message for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)]
        assert any("dagster-ray/config tag: runtime_env, env_vars ignored" in m for m in events)
        assert any("not forwarded to the Ray job (secrets; the node reads NAME_FILE): "
                   "AWS_SECRET_ACCESS_KEY, DAGSTER_PG_PASSWORD" in m for m in events)


def test_launcher_client_sends_the_token_from_its_file(tmp_path, no_token_env):
    from e2i_pipelines.launcher.tiered_ray_run_launcher import TieredRayRunLauncher

    token = tmp_path / "token"
    token.write_text("t0ken\n")
    launcher = TieredRayRunLauncher.from_config_value(
        None, {"ray": {"address": "http://127.0.0.1:9"}, "auth_token_path": str(token)})
    assert "auth_token_path" in TieredRayRunLauncher.config_type()
    assert launcher.auth_token_path == str(token)
    assert ray_auth.auth_headers(launcher.auth_token_path) == {"Authorization": "Bearer t0ken"}
