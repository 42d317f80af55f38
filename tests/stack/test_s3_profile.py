"""The compose stack with profile s3, for real: storage on the trial S3 store (moto's server in a
container, bucket made at start), a CSV uploaded through Caddy, the causal job and the twins job
run on its dataset id in run containers, results read back through the API, and every output in
the bucket, none on the data volume.

The stack is its own compose project with only the services these runs need (no viewer, no
monitoring): the shared stack keeps the default file:// storage its backup test relies on. The
bucket and the volumes are inspected from inside the project (``docker-compose exec`` on the
store, a network-less container on the volumes): no port of the store is published. The secret
key is in no container's inspect document and in no environment of any process of the services
(run containers get it only as the credentials file on the read-only run-secrets volume).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import require
from tests.security.test_run_secrets import process_environments
from tests.stack.compose_stack import DATA_DIR, REPO, ComposeStack, image_present

SERVICES = {"postgres", "mlflow", "code-server", "webserver", "daemon", "api", "engine-proxy",
            "caddy", "s3"}
"""What an upload and the two jobs need: no read-only viewer, no monitoring."""
BUCKET = "e2i"
TRIAL = {"E2I_STORAGE_URL": f"s3://{BUCKET}/data", "E2I_S3_ENDPOINT_URL": "http://s3:5000",
         "E2I_MLFLOW_ARTIFACTS": f"s3://{BUCKET}/mlflow", "AWS_ACCESS_KEY_ID": "trial-key",
         "E2I_S3_BUCKET": BUCKET}
"""docker/.env for the trial (docker/.env.example): storage and MLflow artifacts on the s3 service."""
KEY_SECRET = "s3_secret_access_key"
RUN_CREDENTIALS = "/run/secrets/aws_credentials"
"""The AWS credentials file (key id and key) the daemon publishes for run containers."""
TRUE_EFFECT = 2.0
ROWS = 3000
RUN_TIMEOUT = 1200
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
RUN_OUTPUTS = {"dataset", "causal_estimate", "causal_refutations", "outcome_model", "digital_twins"}
"""Asset folders the two runs must commit under the storage URL (besides datasets/, io/, logs)."""


def accounts_csv(n: int = ROWS) -> bytes:
    """A user's CSV with a known effect: revenue = 3 x + TRUE_EFFECT * programme + noise, the
    programme assigned by x (a confounder the spec names)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=n)
    programme = (rng.random(n) < 1 / (1 + np.exp(-x))).astype(int)
    frame = pd.DataFrame({
        "account": [f"A{i:05d}" for i in range(n)],
        "segment": rng.choice(["smb", "ent"], n),
        "tenure": rng.gamma(2.0, 2.0, n).round(3),
        "x": x.round(6),
        "programme": programme,
        "revenue": (3 * x + TRUE_EFFECT * programme + rng.normal(size=n)).round(6),
    })
    return frame.to_csv(index=False).encode()


def run_params(job: str, dataset_id: str) -> dict[str, dict[str, Any]]:
    """POST /v1/runs params of ``job`` on the uploaded dataset, sized for a 2-CPU test host."""
    dataset = {"id": dataset_id, "treatment": "programme", "outcome": "revenue",
               "common_causes": ["segment", "tenure", "x"], "id_column": "account"}
    if job == "causal_job":
        return {"dataset": dataset, "causal_estimate": {"num_simulations": 20}}
    return {"dataset": dataset,
            "outcome_model": {"n_estimators": 20, "train_rows": ROWS},
            "digital_twins": {"n_twins": 20_000, "chunk_rows": 5_000, "seed": 1, "fit_rows": ROWS},
            "twin_interventions": {"chunk_rows": 7_000}}


def trial_env(stack: ComposeStack) -> str:
    """Point ``stack`` at the trial store: the env file's variables and the secret key's file
    (the Docker secret every storage user holds). Returns the key."""
    key = secrets.token_urlsafe(18)
    with open(stack.env_file, "a") as handle:
        handle.write("".join(f"{k}={v}\n" for k, v in TRIAL.items()))
    (stack.workdir / "secrets" / KEY_SECRET).write_text(key)
    return key


# -- the compose file as docker-compose resolves it (no containers) -------------------------------
@pytest.mark.docker
def test_profile_s3_config_gives_every_storage_user_the_url_and_the_key_as_a_secret(tmp_path) -> None:
    tmp_path.chmod(0o755)
    stack = ComposeStack(workdir=tmp_path, profiles=["s3"])
    trial_env(stack)
    config = yaml.safe_load(stack.compose("config", timeout=120).stdout)
    services = config["services"]
    for name in ("code-server", "webserver", "daemon", "webserver-viewer", "api"):
        env = services[name]["environment"]
        assert env["E2I_STORAGE_URL"] == TRIAL["E2I_STORAGE_URL"], name
        assert env["E2I_S3_ENDPOINT_URL"] == "http://s3:5000", name
        assert env["AWS_SECRET_ACCESS_KEY_FILE"] == f"/run/secrets/{KEY_SECRET}", name
        assert "AWS_SECRET_ACCESS_KEY" not in env, name
        assert KEY_SECRET in {s if isinstance(s, str) else s["source"] for s in services[name]["secrets"]}
    assert config["secrets"][KEY_SECRET]["file"] == str(tmp_path / "secrets" / KEY_SECRET)
    api = services["api"]
    # Uploads are staged on the API's own writable volume; the data volume stays read-only.
    assert api["environment"]["E2I_UPLOAD_STAGING_DIR"] == "/var/lib/e2i/uploads"
    assert {"api-uploads:/var/lib/e2i/uploads:rw", f"e2i-data:{DATA_DIR}:ro"} <= set(api["volumes"])
    assert config["volumes"]["api-uploads"]["name"] == f"{stack.project}_api_uploads"
    launcher = yaml.safe_load(stack.instance_file.read_text())["run_launcher"]["config"]
    forwarded = {v.split("=")[0]: v for v in launcher["env_vars"]}
    assert {"E2I_STORAGE_URL", "E2I_S3_ENDPOINT_URL"} <= set(forwarded)
    # Run containers: the key id and key only as the credentials file the daemon publishes.
    assert forwarded["AWS_SHARED_CREDENTIALS_FILE"] == f"AWS_SHARED_CREDENTIALS_FILE={RUN_CREDENTIALS}"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY_FILE"} & set(forwarded)


# -- the stack, for real ----------------------------------------------------------------------
@contextlib.contextmanager
def s3_stack(docker_client: Any, timeout: float = 900) -> Iterator[tuple[ComposeStack, str]]:
    """A fresh project with profile s3 and only SERVICES, healthy; the stack and the secret key.
    Removed with its volumes afterwards."""
    require(shutil.which("docker-compose") is not None, "docker-compose (apt-get install docker-compose)")
    require(image_present(docker_client, ComposeStack.image), f"image {ComposeStack.image} (docker/build_image.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="e2i-s3-stack-"))
    workdir.chmod(0o755)
    stack = ComposeStack(workdir=workdir, profiles=["s3"], project=f"e2is3{secrets.token_hex(4)}")
    try:
        key = trial_env(stack)
        started = time.monotonic()
        stack.compose("build", "postgres", timeout=900)
        stack.run(["bash", str(REPO / "docker" / "build_s3_image.sh")], timeout=900, check=True)
        stack.build_seconds = time.monotonic() - started
        start = time.monotonic()
        stack.compose("up", "-d", *sorted(SERVICES), timeout=timeout, check=False)
        stack.cold_start_seconds = stack.wait_healthy(docker_client, timeout=timeout, start=start,
                                                      services=SERVICES)
        print(f"\nstack {stack.project} (profile s3): cold start {stack.cold_start_seconds:.1f}s, "
              f"build {stack.build_seconds:.1f}s; healthy after: {stack.healthy_after}")
        yield stack, key
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            stack.cleanup(docker_client)


def bucket_keys(stack: ComposeStack) -> list[str]:
    """Every object key in the trial bucket, listed inside the s3 container."""
    script = ("import boto3, json; c = boto3.client('s3', endpoint_url='http://127.0.0.1:5000', "
              "region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x'); "
              f"p = c.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}'); "
              "print(json.dumps([o['Key'] for page in p for o in page.get('Contents', [])]))")
    out = stack.compose("exec", "-T", "s3", "/opt/s3/bin/python", "-c", script, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def volume_files(docker_client: Any, stack: ComposeStack, volume: str) -> list[str]:
    """Files (relative paths) in one of the stack's volumes, from a network-less container."""
    out = docker_client.containers.run(
        stack.image, ["find", "/v", "-type", "f"], remove=True,
        network_mode="none", volumes={f"{stack.project}_{volume}": {"bind": "/v", "mode": "ro"}})
    return sorted(line.removeprefix("/v/") for line in out.decode().splitlines())


def wait_finished(client: Any, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        run = response.json()
        if run["status"] in FINISHED:
            return run
        time.sleep(3)
    raise AssertionError(f"run {run_id} not finished after {RUN_TIMEOUT}s: {run}")


def metadata_value(results: dict[str, Any], asset: str, key: str) -> Any:
    [found] = [a for a in results["assets"] if a["asset"] == asset]
    return found["metadata"][key]["value"]


@pytest.mark.stack
@pytest.mark.docker
@pytest.mark.timeout(3000)
def test_upload_causal_and_twins_runs_on_the_s3_profile(docker_client) -> None:
    started = time.monotonic()
    with s3_stack(docker_client) as (stack, key):
        with stack.api_client(timeout=120) as client:
            upload = client.post("/v1/datasets", params={"name": "accounts"}, content=accounts_csv(),
                                 headers={"Content-Type": "text/csv"})
            assert upload.status_code == 201, upload.text
            dataset = upload.json()
            assert dataset["rows"] == ROWS
            assert client.get(f"/v1/datasets/{dataset['id']}").json()["id"] == dataset["id"]

            run_ids = {}
            for job in ("causal_job", "twins_job"):
                response = client.post("/v1/runs", json={"job": job, "params": run_params(job, dataset["id"])})
                assert response.status_code == 202, response.text
                run_ids[job] = response.json()["run_id"]
            for job, run_id in run_ids.items():
                run = wait_finished(client, run_id)
                assert run["status"] == "SUCCESS", (job, run)
            results = {job: client.get(f"/v1/runs/{run_id}/results").json() for job, run_id in run_ids.items()}

        # Results through the API: the effect planted in the CSV, twins written to the bucket.
        [causal] = results["causal_job"]["highlights"]["causal"]
        assert abs(causal["estimate"] - TRUE_EFFECT) < 0.15, causal
        assert causal["ci_low"] < TRUE_EFFECT < causal["ci_high"], causal
        assert metadata_value(results["causal_job"], "dataset", "dataset_id") == dataset["id"]
        assert metadata_value(results["twins_job"], "dataset", "dataset_id") == dataset["id"]
        assert results["twins_job"]["highlights"]["twins"], results["twins_job"]["highlights"]
        for job, asset in (("causal_job", "causal_estimate"), ("twins_job", "digital_twins")):
            assert metadata_value(results[job], asset, "path") == f"{TRIAL['E2I_STORAGE_URL']}/io/{asset}"

        # The runs wrote to the bucket (below) with the key only as a file: the credentials file
        # the daemon published into the read-only run-secrets volume. No container's inspect
        # document and no service process's environment holds the key.
        for run_id in run_ids.values():
            [container] = [c for c in stack.run_containers(docker_client) if c.labels.get("dagster/run_id") == run_id]
            env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
            assert env["AWS_SHARED_CREDENTIALS_FILE"] == RUN_CREDENTIALS, env.keys()
            assert "AWS_SECRET_ACCESS_KEY" not in env and env["E2I_STORAGE_URL"] == TRIAL["E2I_STORAGE_URL"]
            assert key not in json.dumps(container.attrs), f"the key is in run container {run_id}'s inspect document"
        for service in sorted(SERVICES):
            attrs = docker_client.api.inspect_container(stack.container_id(service))
            assert key not in json.dumps(attrs), f"the key is in {service}'s inspect document"
            if attrs["Config"]["Image"] != stack.image:
                continue
            environs = process_environments(docker_client.containers.get(attrs["Id"]))
            assert environs, service
            for command, environ in environs.items():
                assert key.encode() not in environ, f"the key is in the environment of {service}: {command[:80]!r}"

        # Everything in the bucket ...
        keys = bucket_keys(stack)
        data = "data/"
        assert any(k.startswith(f"{data}datasets/smoke/{dataset['id']}/") and k.endswith(".parquet") for k in keys)
        for asset in RUN_OUTPUTS:
            assert any(k.startswith(f"{data}{asset}/") and k.endswith("/_E2I_COMPLETE") for k in keys), asset
        assert any(k.startswith(f"{data}io/") for k in keys)
        for run_id in run_ids.values():
            assert any(k.startswith(f"{data}compute_logs/") and run_id in k for k in keys), run_id
            assert any(k.startswith("mlflow/") for k in keys)  # MLflow's S3 artifact store
        # ... and nothing of it on the volumes (node-local staging and caches only).
        on_volume = volume_files(docker_client, stack, "data")
        print(f"\ndata volume: {on_volume}\n{len(keys)} objects in the bucket")
        stored = {"datasets", "io", *RUN_OUTPUTS}
        assert not [p for p in on_volume if p.split("/")[0] in stored or p.startswith(".dagster/compute_logs/")]
        assert volume_files(docker_client, stack, "mlflow_artifacts") == []
        assert volume_files(docker_client, stack, "api_uploads") == []  # staged uploads removed
    print(f"s3 profile stack test: {time.monotonic() - started:.0f}s (cold start "
          f"{stack.cold_start_seconds:.0f}s, build {stack.build_seconds:.0f}s)")
