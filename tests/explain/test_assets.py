"""The SHAP assets materialize on small upstream values; bad config fails before heavy work."""

import base64
import re

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import shap

from e2i_pipelines.core.refs import DatasetRef
from e2i_pipelines.data.synthetic import SPEC
from e2i_pipelines.defs.explain.assets import assets as explain_assets
from e2i_pipelines.tiers import TIER_TAG
from tests.support.analytics import (
    materialization_metadata,
    materialize_on_upstream,
    write_upstream,
)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A real synthetic dataset file and a LightGBM outcome model trained on it."""
    return write_upstream(tmp_path_factory.mktemp("upstream"), 4_000, seed=11, num_leaves=31,
                          rounds=50, row_group_size=1_500)


def _materialize(upstream, tmp_path, monkeypatch, run_config, selection):
    data_ref, model_ref, _ = upstream
    return materialize_on_upstream(explain_assets, data_ref, model_ref, tmp_path, monkeypatch,
                                   run_config, selection)


_metadata = materialization_metadata


def _png(markdown: str) -> bytes:
    match = re.search(r"base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, "no inline PNG in the metadata"
    data = base64.b64decode(match.group(1))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_tiers_and_groups():
    tiers = {next(iter(a.specs)).key.path[-1]: a.op.tags[TIER_TAG] for a in explain_assets}
    assert tiers == {"shap_explanations": "heavy", "shap_summary": "medium"}
    assert {next(iter(a.specs)).group_name for a in explain_assets} == {"explain"}


def test_shap_explanations_materializes_exact_attributions(upstream, tmp_path, monkeypatch):
    data_ref, model_ref, frame = upstream
    result = _materialize(upstream, tmp_path, monkeypatch,
                          {"shap_explanations": {"config": {"chunk_rows": 900,
                                                            "sample_rows": 300}}},
                          selection=["*shap_explanations"])
    assert result.success
    meta = _metadata(result, "shap_explanations")
    assert meta["rows"] == len(frame) and meta["method"] == "fast"
    assert meta["rows_per_second"] > 0 and meta["max_additivity_error"] <= 1e-6

    out = pq.read_table(meta["attributions_path"]).to_pandas()
    booster = model_ref.load_booster()
    inputs = model_ref.model_frame(frame)
    reference = shap.TreeExplainer(booster).shap_values(inputs)
    assert list(out.columns) == ["hcp_id", *model_ref.feature_names]
    np.testing.assert_array_equal(out["hcp_id"].to_numpy(), frame["hcp_id"].to_numpy())
    assert np.max(np.abs(out[model_ref.feature_names].to_numpy() - reference)) <= 1e-6

    top = meta["top_features"]
    expected = np.abs(reference).mean(axis=0)
    best = model_ref.feature_names[int(np.argmax(expected))]
    assert top[0]["feature"] == best
    assert top[0]["mean_abs_shap"] == pytest.approx(expected.max(), rel=1e-9)
    assert best in meta["importance"]
    _png(meta["shap_beeswarm"])
    _png(meta["shap_bar"])

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.metrics["max_additivity_error"] <= 1e-6
    artifacts = {a.path for a in client.list_artifacts(meta["mlflow_run_id"])}
    assert {"importance.csv", "shap_beeswarm.png", "shap_bar.png"} <= artifacts


def test_interventional_shap_over_a_control_arm_background(upstream, tmp_path, monkeypatch):
    data_ref, model_ref, frame = upstream
    config = {"feature_perturbation": "interventional", "background_rows": 200,
              "background_source": "control", "seed": 3, "chunk_rows": 1_500}
    result = _materialize(upstream, tmp_path, monkeypatch,
                          {"shap_explanations": {"config": config}},
                          selection=["*shap_explanations"])
    assert result.success
    meta = _metadata(result, "shap_explanations")
    assert meta["feature_perturbation"] == "interventional" and meta["background_rows"] == 200
    assert meta["max_additivity_error"] <= 1e-9
    booster = model_ref.load_booster()
    inputs = model_ref.model_frame(frame)
    raw = booster.predict(inputs, raw_score=True)
    control = raw[frame[model_ref.treatment].to_numpy() == 0]
    # base value = mean raw score of 200 control rows: near the control arm's mean
    assert abs(meta["base_value"] - control.mean()) < 4 * control.std() / np.sqrt(200)
    out = pq.read_table(meta["attributions_path"]).to_pandas()
    phi = out[model_ref.feature_names].to_numpy()
    np.testing.assert_allclose(phi.sum(axis=1) + meta["base_value"], raw, atol=1e-9)


def test_shap_summary_on_a_sample(upstream, tmp_path, monkeypatch):
    result = _materialize(upstream, tmp_path, monkeypatch,
                          {"shap_summary": {"config": {"sample_rows": 500}}},
                          selection=["*shap_summary"])
    assert result.success
    meta = _metadata(result, "shap_summary")
    assert meta["rows"] == 500 and meta["max_additivity_error"] <= 1e-6
    assert len(meta["top_features"]) == len(upstream[1].feature_names)  # 13 < top_k 15
    _png(meta["shap_beeswarm"])


@pytest.mark.parametrize(("config", "named"), [
    ({"method": "kernel"}, "method"),
    ({"chunk_rows": 0}, "chunk_rows"),
    ({"max_rows": -5}, "max_rows"),
    ({"feature_perturbation": "observational"}, "feature_perturbation"),
    ({"feature_perturbation": "interventional", "background_rows": 0}, "background_rows"),
    ({"feature_perturbation": "interventional", "background_rows": 4_001}, "background_rows"),
    ({"feature_perturbation": "interventional", "background_source": "control",
      "background_rows": 3_999}, "background_rows"),
    ({"feature_perturbation": "interventional", "method": "lightgbm"}, "method"),
])
def test_bad_config_fails_before_work(upstream, tmp_path, monkeypatch, config, named):
    result = _materialize(upstream, tmp_path, monkeypatch,
                          {"shap_explanations": {"config": config}},
                          selection=["*shap_explanations"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error.message)
    assert "shap config invalid" in message and named in message
    assert not list((tmp_path / "shap_explanations").glob("*/attributions.parquet"))


def test_dataset_without_model_column_fails_clearly(upstream, tmp_path, monkeypatch):
    data_ref, model_ref, frame = upstream
    path = tmp_path / "partial.parquet"
    frame.drop(columns=["prior_rx"]).to_parquet(path)
    partial = DatasetRef(str(path), SPEC, len(frame), "hcp_id")
    result = _materialize((partial, model_ref, frame), tmp_path, monkeypatch, {},
                          selection=["*shap_explanations"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "['prior_rx']" in str(failure.event_specific_data.error.message)
