"""``fan_out: true`` over the Ray test cluster's two heavy nodes writes the single-node files and
numbers (SHAP to 1e-12, twins identical); without a Ray cluster the assets fail before any
heavy work, and a cluster without the fan-out resource is refused clearly. The run's driver
side is this process: the asset connects through RAY_ADDRESS, as a Ray job's driver does.

No shared disk: the dataset and the model are read from the cluster's S3 bucket (their local
copies are gone), the chunks travel through Ray, and the fan-out workers count their attempts in
the bucket, not in a folder of this machine."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from e2i_pipelines.core import storage
from e2i_pipelines.core.fanout import FanoutUnavailable, RayFanout, connect_fanout
from e2i_pipelines.defs.explain.assets import assets as explain_assets
from e2i_pipelines.defs.twins.assets import assets as twin_assets
from e2i_pipelines.tiers import RAY_FANOUT_RESOURCE
from tests.support.analytics import (
    materialization_metadata,
    materialize_on_upstream,
    write_upstream,
)

ray = pytest.importorskip("ray")

SHAP_CONFIG = {"chunk_rows": 2_500, "sample_rows": 500}
TWINS_CONFIG = {"n_twins": 150_000, "chunk_rows": 65_536, "seed": 4, "fit_rows": 5_000,
                "ks_rows": 20_000}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, ray_storage):
    """A 20k-row synthetic dataset and a LightGBM outcome model trained on it, both in the
    cluster's bucket only (the local files are removed once uploaded)."""
    local = tmp_path_factory.mktemp("fanout_upstream")
    data_ref, model_ref, frame = write_upstream(local, 20_000, seed=5, num_leaves=31, rounds=60,
                                                row_group_size=3_000)
    remote = f"{ray_storage.url}/fanout_upstream/{uuid.uuid4().hex[:8]}"
    for name in ("data.parquet", "model.txt"):
        storage.to_path(f"{remote}/{name}").write_bytes((local / name).read_bytes())
    shutil.rmtree(local)
    return (dataclasses.replace(data_ref, path=f"{remote}/data.parquet"),
            dataclasses.replace(model_ref, model_path=f"{remote}/model.txt"), frame)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """Storage and MLflow root shared by the runs of this module (each run has its folder)."""
    return tmp_path_factory.mktemp("fanout_runs")


@pytest.fixture
def run_on_cluster(ray_cluster, monkeypatch):
    """The run sees the cluster the way a Ray job's driver does: RAY_ADDRESS, no connection."""
    ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    yield ray_cluster
    ray.shutdown()


@pytest.fixture
def no_ray(monkeypatch):
    ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _run(assets, upstream, root: Path, monkeypatch, asset: str, config: dict):
    """Materialize ``asset`` under ``root`` (each run writes its own folder there)."""
    data_ref, model_ref, _ = upstream
    return materialize_on_upstream(assets, data_ref, model_ref, root, monkeypatch,
                                   {asset: {"config": config}}, selection=[f"*{asset}"])


def _failure(result) -> str:
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(failure.event_specific_data.error.message)


def _no_heavy_work(monkeypatch) -> None:
    """Building the explainer / fitting the population model fails the test if reached."""
    def heavy(*args, **kwargs):
        raise AssertionError("heavy work started before the fan-out check")

    monkeypatch.setattr("e2i_pipelines.defs.explain.assets._explainer", heavy)
    monkeypatch.setattr("e2i_pipelines.defs.twins.assets.make_twins", heavy)


def test_fan_out_shap_equals_single_node(upstream, runs_root, monkeypatch, run_on_cluster):
    local = _run(explain_assets, upstream, runs_root, monkeypatch, "shap_explanations",
                 SHAP_CONFIG)
    fanned = _run(explain_assets, upstream, runs_root, monkeypatch, "shap_explanations",
                  {**SHAP_CONFIG, "fan_out": True})
    assert local.success and fanned.success
    one = materialization_metadata(local, "shap_explanations")
    many = materialization_metadata(fanned, "shap_explanations")

    a = pq.read_table(one["attributions_path"])
    b = pq.read_table(many["attributions_path"])
    assert a.schema == b.schema and a.num_rows == b.num_rows == 20_000
    a, b = a.to_pandas(), b.to_pandas()
    np.testing.assert_array_equal(a["hcp_id"].to_numpy(), b["hcp_id"].to_numpy())
    names = upstream[1].feature_names
    assert np.max(np.abs(a[names].to_numpy() - b[names].to_numpy())) <= 1e-12
    for key in ("rows", "method", "base_value", "max_additivity_error", "top_features",
                "importance"):
        assert one[key] == many[key], key

    assert "fan_out_workers" not in one
    assert many["fan_out_workers"] == 2 and many["fan_out_nodes"] == 2
    assert len(many["fan_out_node_ids"]) == 2
    assert not ray.is_initialized()  # the asset closed the connection it opened


def test_fan_out_twins_equal_single_node(upstream, runs_root, monkeypatch, run_on_cluster):
    local = _run(twin_assets, upstream, runs_root, monkeypatch, "digital_twins", TWINS_CONFIG)
    fanned = _run(twin_assets, upstream, runs_root, monkeypatch, "digital_twins",
                  {**TWINS_CONFIG, "fan_out": True})
    assert local.success and fanned.success
    one = materialization_metadata(local, "digital_twins")
    many = materialization_metadata(fanned, "digital_twins")
    path_one = local.output_for_node("digital_twins").path
    path_many = fanned.output_for_node("digital_twins").path
    a, b = storage.read_parquet(path_one), storage.read_parquet(path_many)
    assert len(a) == 150_000
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    parts_one, parts_many = storage.parquet_files(path_one), storage.parquet_files(path_many)
    assert [f.metadata.num_rows for f in parts_one] == [f.metadata.num_rows for f in parts_many]
    assert parts_one[0].schema_arrow == parts_many[0].schema_arrow
    for key in ("n_twins", "max_ks", "max_abs_corr_diff", "max_frequency_diff", "ks"):
        assert one[key] == many[key], key
    assert many["fan_out_workers"] == 2 and 1 <= many["fan_out_nodes"] <= 2


@pytest.mark.parametrize(("assets", "asset", "config"), [
    (explain_assets, "shap_explanations", SHAP_CONFIG),
    (twin_assets, "digital_twins", TWINS_CONFIG),
])
def test_fan_out_without_ray_fails_before_heavy_work(upstream, tmp_path, monkeypatch, no_ray,
                                                     assets, asset, config):
    _no_heavy_work(monkeypatch)
    result = _run(assets, upstream, tmp_path, monkeypatch, asset, {**config, "fan_out": True})
    message = _failure(result)
    assert ("fan_out: true needs a Ray cluster with heavy nodes offering the e2i-fanout "
            "resource" in message)
    assert "RAY_ADDRESS is not set" in message
    assert not (tmp_path / asset).exists()


def test_cluster_without_the_fanout_resource_fails_clearly(run_on_cluster):
    """The check against the cluster's resources, on a resource no node offers (a second,
    local Ray in this process would break its later connections: OwnerDiedError)."""
    with pytest.raises(FanoutUnavailable) as failed:
        connect_fanout(resource="e2i-fanout-absent")
    message = str(failed.value)
    assert "needs a Ray cluster with heavy nodes offering the e2i-fanout-absent resource" in message
    assert "offers 0 e2i-fanout-absent" in message and f"'{RAY_FANOUT_RESOURCE}'" in message
    assert not ray.is_initialized()  # the connection it opened for the check is closed


def test_ray_fanout_keeps_order_and_resubmits_a_lost_chunk_once(run_on_cluster, ray_storage):
    prefix = f"e2i/attempts/{uuid.uuid4().hex[:8]}/"
    marks = f"s3://{ray_storage.bucket}/{prefix}"  # the workers reach it with their node's env

    def attempts(item: int) -> int:
        return sum(k.rsplit("/", 1)[1].startswith(f"{item}-") for k in ray_storage.keys(prefix))

    def work(state: int, item: int) -> int:  # local: pickled by value for the workers
        import os
        import random
        import time

        from e2i_pipelines.core.storage import to_path

        to_path(marks).fs.invalidate_cache()  # another worker may have written since
        attempt = 0
        while to_path(f"{marks}{item}-{attempt}").exists():
            attempt += 1
        to_path(f"{marks}{item}-{attempt}").write_bytes(b"")
        if item == 5 and attempt == 0 or item == 7:
            os._exit(1)  # the worker dies: a system failure, not the chunk's own error
        if item == 9:
            raise ValueError("chunk 9 is bad")
        time.sleep(random.random() / 20)
        return state + item

    with connect_fanout() as fanout:
        assert isinstance(fanout, RayFanout) and fanout.owns_connection
        assert fanout.workers == 2 and fanout.heavy_nodes == 2
        out = list(fanout.map(work, 100, range(7)))
        assert out == [(i, 100 + i) for i in range(7)]
        assert attempts(5) == 2  # lost once, resubmitted once
        fanout.retries = 0
        with pytest.raises(ray.exceptions.WorkerCrashedError):
            list(fanout.map(work, 0, [7]))
        assert attempts(7) == 1  # never more than 1 + retries attempts
        with pytest.raises(ValueError, match="chunk 9 is bad"):
            list(fanout.map(work, 0, [8, 9]))
        assert attempts(9) == 1  # the chunk's own error: not retried
    assert not ray.is_initialized()
