"""The compose stack's profile s3 as docker-compose 1.29 resolves it: one more service, an
S3-compatible store hardened like the others, on the networks the runs and services use; the
storage URL and MLflow's artifact store are set through the same variables."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import require
from tests.stack.compose_stack import ComposeStack

TRIAL = {"E2I_STORAGE_URL": "s3://e2i/data", "E2I_S3_ENDPOINT_URL": "http://s3:5000",
         "E2I_MLFLOW_ARTIFACTS": "s3://e2i/mlflow", "AWS_ACCESS_KEY_ID": "trial"}


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeStack]:
    require(shutil.which("docker-compose") is not None, "docker-compose")
    require(Path("/var/run/docker.sock").exists(), "Docker socket")
    stack = ComposeStack(workdir=Path(tempfile.mkdtemp(prefix="e2i-compose-s3-")))
    yield stack
    shutil.rmtree(stack.workdir, ignore_errors=True)


def _config(stack: ComposeStack, *args: str) -> dict:
    return yaml.safe_load(stack.compose(*args, "config", timeout=120).stdout)


def test_default_stack_has_no_s3_and_local_storage(stack):
    config = _config(stack)
    assert config["services"]["s3"]["profiles"] == ["s3"]  # listed by config, started only with it
    env = config["services"]["daemon"]["environment"]
    assert env["E2I_STORAGE_URL"] == "file:///var/lib/e2i/data" == f"file://{env['E2I_DATA_DIR']}"


def test_profile_s3_adds_a_hardened_store_and_points_storage_at_it(stack):
    with open(stack.env_file, "a") as handle:
        handle.write("".join(f"{k}={v}\n" for k, v in TRIAL.items()))
    config = _config(stack, "--profile", "s3")
    s3 = config["services"]["s3"]
    assert s3["cap_drop"] == ["ALL"] and s3["security_opt"] == ["no-new-privileges:true"]
    assert s3["read_only"] is True and str(s3["user"]).partition(":")[0] not in ("", "0", "root")
    assert not s3.get("ports") and set(s3["networks"]) == {"backend", "runs"}
    assert s3["healthcheck"]["test"] and s3["mem_limit"]
    for name in ("daemon", "webserver", "code-server"):
        env = config["services"][name]["environment"]
        assert env["E2I_STORAGE_URL"] == "s3://e2i/data", name
        assert env["E2I_S3_ENDPOINT_URL"] == "http://s3:5000", name
        assert "AWS_SECRET_ACCESS_KEY" not in env, name  # a key only as a *_FILE secret
    mlflow = config["services"]["mlflow"]
    assert mlflow["environment"]["E2I_MLFLOW_ARTIFACTS"] == "s3://e2i/mlflow"
    assert "MLFLOW_S3_ENDPOINT_URL" in " ".join(mlflow["command"])
