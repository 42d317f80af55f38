"""The causal job and the twins job on S3 storage (moto) equal the same runs on local disk.

Both jobs run in-process from the code location's definitions (its storage resource and IO
manager read E2I_STORAGE_URL at run start); the results are read back through the storage
layer from the refs the assets returned.
"""

import json

import dagster as dg
import pandas as pd
import pytest

from e2i_pipelines.core import storage
from e2i_pipelines.core.storage import MANIFEST
from e2i_pipelines.definitions import defs

DATASET = {"dataset": {"config": {"n_rows": 3000, "seed": 2}}}
CAUSAL = {**DATASET, "causal_estimate": {"config": {"num_simulations": 20}}}
TWINS = {**DATASET, "outcome_model": {"config": {"n_estimators": 20, "train_rows": 3000}},
         "digital_twins": {"config": {"n_twins": 20_000, "chunk_rows": 5_000, "seed": 1,
                                      "fit_rows": 3000}},
         "twin_interventions": {"config": {"chunk_rows": 7_000}}}


def _run(job: str, ops: dict, monkeypatch, tmp_path, s3=None) -> dg.ExecuteInProcessResult:
    """Run ``job`` with storage on ``s3`` (or on local disk under tmp_path/local)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow-{bool(s3)}.db")
    if s3 is None:
        monkeypatch.delenv("E2I_STORAGE_URL", raising=False)
        monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path / "local"))
    result = defs.resolve_job_def(job).execute_in_process(
        run_config={"ops": ops}, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success, [str(e.event_specific_data.error) for e in result.all_events
                            if e.is_failure and e.event_specific_data][:2]
    return result


def _committed_keys(s3, prefix: str) -> dict[str, list[str]]:
    """Output folder (asset/run) -> its object names, for folders with a manifest."""
    keys = s3.keys(prefix)
    folders = {k.rsplit("/", 1)[0] for k in keys if k.endswith("/" + MANIFEST)}
    return {f.removeprefix(prefix).split("/")[0]: sorted(k.removeprefix(f + "/") for k in keys
                                                          if k.startswith(f + "/"))
            for f in folders}


@pytest.fixture
def s3_local(s3, tmp_path):
    """The s3 fixture's node-local E2I_DATA_DIR (staging only)."""
    return tmp_path / "node"


def test_causal_job_on_s3_equals_local(s3, s3_local, monkeypatch, tmp_path):
    remote = _run("causal_job", CAUSAL, monkeypatch, tmp_path, s3)
    ref = remote.output_for_node("causal_estimate")
    assert ref.dataset.path.startswith(s3.url.rsplit("/", 1)[0] + "/")
    committed = _committed_keys(s3, f"{tmp_path.name}/")
    assert {"dataset", "causal_estimate", "causal_refutations", "causal_diagnostics"} <= set(committed)
    assert "data.parquet" in committed["dataset"] and MANIFEST in committed["causal_estimate"]
    assert not any((s3_local / name).exists() for name in committed)  # nothing on local disk
    remote_estimate = json.loads(storage.read_text(storage.to_path(ref.dataset.path).parents[1]
                                                   .parent / "causal_estimate" / remote.run_id
                                                   / "estimate.json"))
    remote_data = ref.dataset.read()

    local = _run("causal_job", CAUSAL, monkeypatch, tmp_path)
    local_ref = local.output_for_node("causal_estimate")
    assert storage.is_local(local_ref.dataset.path)
    local_estimate = json.loads(storage.read_text(
        tmp_path / "local" / "causal_estimate" / local.run_id / "estimate.json"))
    pd.testing.assert_frame_equal(remote_data, local_ref.dataset.read())
    assert remote_estimate == local_estimate
    assert ref.result.estimate == local_ref.result.estimate
    checks = {e.check_name: e.passed for e in remote.get_asset_check_evaluations()}
    assert checks == {e.check_name: e.passed for e in local.get_asset_check_evaluations()}


def test_twins_job_on_s3_equals_local(s3, s3_local, monkeypatch, tmp_path):
    remote = _run("twins_job", TWINS, monkeypatch, tmp_path, s3)
    twins = remote.output_for_node("digital_twins")
    assert twins.path.startswith("s3://") and storage.exists(twins.path)
    committed = _committed_keys(s3, f"{tmp_path.name}/")
    assert {"dataset", "feature_store", "outcome_model", "digital_twins",
            "twin_interventions"} <= set(committed)
    assert "twins.parquet/part-00000.parquet" in committed["digital_twins"]  # whole objects
    assert s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []
    assert "model.txt" in committed["outcome_model"]
    remote_twins = storage.read_parquet(twins.path)
    assert sum(f.metadata.num_rows for f in storage.parquet_files(twins.path)) == 20_000  # footers
    remote_report = remote.output_for_node("twin_interventions")

    local = _run("twins_job", TWINS, monkeypatch, tmp_path)
    local_twins = local.output_for_node("digital_twins")
    assert storage.is_local(local_twins.path)
    pd.testing.assert_frame_equal(remote_twins, storage.read_parquet(local_twins.path))
    assert len(remote_twins) == 20_000
    local_report = local.output_for_node("twin_interventions")
    drop = ("mlflow_run_id", "twins_path", "path", "seconds", "twins_per_second")  # timings
    assert ({k: v for k, v in remote_report.items() if k not in drop}
            == {k: v for k, v in local_report.items() if k not in drop})
