"""The twins assets materialize with small upstream values; bad config fails up front."""

import json
from pathlib import Path

import pandas as pd
import pytest

from e2i_pipelines.analytics.twins.fidelity_checks import CHECKS
from e2i_pipelines.analytics.twins.uplift import booster_uplift
from e2i_pipelines.core.refs import TwinsRef
from e2i_pipelines.defs.twins.assets import assets as twin_assets
from e2i_pipelines.defs.twins.checks import asset_checks as twin_checks
from e2i_pipelines.tiers import TIER_TAG
from tests.support.analytics import (
    materialization_metadata,
    materialize_on_upstream,
    write_upstream,
)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A real synthetic dataset file and a LightGBM outcome model trained on it."""
    data_ref, model_ref, _ = write_upstream(tmp_path_factory.mktemp("upstream"), 6_000, seed=3,
                                            num_leaves=15, rounds=40)
    return data_ref, model_ref


def _materialize(upstream, tmp_path, monkeypatch, run_config, selection=None):
    data_ref, model_ref = upstream
    return materialize_on_upstream([*twin_assets, *twin_checks], data_ref, model_ref, tmp_path,
                                   monkeypatch, run_config, selection)


_metadata = materialization_metadata
TARGETING = [{"column": "engagement_score", "op": ">", "value": 0.5},
             {"column": "region", "op": "==", "value": "Northeast"}]


def test_assets_are_heavy_and_grouped():
    for a in twin_assets:
        spec = next(iter(a.specs))
        assert spec.group_name == "twins"
        assert a.op.tags[TIER_TAG] == "heavy"


def test_twins_and_interventions_materialize(upstream, tmp_path, monkeypatch):
    result = _materialize(upstream, tmp_path, monkeypatch, {
        "digital_twins": {"config": {"n_twins": 30_000, "chunk_rows": 5_000, "seed": 1}},
        "twin_interventions": {"config": {
            "targeting": "conditions", "conditions": TARGETING, "chunk_rows": 7_000}},
    })
    assert result.success
    twins: TwinsRef = result.output_for_node("digital_twins")
    assert twins.n_rows == 30_000 and sorted(p.name for p in Path(twins.path).iterdir()) == ["part-00000.parquet"]
    assert len(pd.read_parquet(twins.path, columns=["twin_id"])) == 30_000
    meta = _metadata(result, "digital_twins")
    assert meta["n_twins"] == 30_000
    assert meta["max_ks"] < 0.05 and meta["max_frequency_diff"] < 0.02
    assert meta["max_abs_corr_diff"] < 0.1
    assert meta["mlflow_run_id"] and "data:image/png;base64" in meta["fidelity_plot"]
    report = json.loads((Path(twins.path).parent / "fidelity.json").read_text())
    assert set(report["ks"]) >= {"patient_volume", "engagement_score"}

    meta = _metadata(result, "twin_interventions")
    assert meta["ate_ci_low"] < meta["ate"] < meta["ate_ci_high"]
    assert 0 < meta["treated_share_targeted"] < 0.2
    assert 0 < meta["uplift_targeted"] < meta["ate"]
    assert meta["targeting_rule"] == "rule: engagement_score > 0.5 and region == 'Northeast'"
    # the structured rule treats exactly the twins a numpy mask on the twins file selects, and
    # the targeted uplift is the one the old DataFrame.eval query path computed from that mask
    frame = pd.read_parquet(twins.path)
    mask = ((frame["engagement_score"].to_numpy() > 0.5)
            & (frame["region"].astype(str).to_numpy() == "Northeast"))
    model = upstream[1]
    d = booster_uplift(model.load_booster(), model.model_frame(frame), model.treatment)
    assert meta["treated_share_targeted"] == pytest.approx(mask.mean(), abs=1e-12)
    assert meta["uplift_targeted"] == pytest.approx((d * mask).mean(), abs=1e-9)
    assert mask.sum() == frame.eval("engagement_score > 0.5 and region == 'Northeast'").sum()
    assert "data:image/png;base64" in meta["plot"]
    # the outcome model learnt an effect of the right size (truth ATE of the generator)
    assert meta["ate"] == pytest.approx(upstream[0].truth["ate"], rel=0.25)
    out = result.output_for_node("twin_interventions")
    assert out["mlflow_run_id"] == meta["mlflow_run_id"]

    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert set(checks) == set(CHECKS)
    failed = {n: {k: v.value for k, v in c.metadata.items() if k != "plot"}
              for n, c in checks.items() if not c.passed}
    assert not failed
    for check in checks.values():
        assert check.asset_key.path == ["digital_twins"]
        assert check.metadata["rule"].value and "data:image/png" in check.metadata["plot"].value
    assert checks["detection"].metadata["auc"].value < 0.6
    assert checks["privacy"].metadata["real_rows_hashed"].value == 6_000
    shapes = checks["column_shapes"].metadata["column_scores"].value
    assert set(shapes) == set(twins.columns)
    causal = checks["causal_fidelity"].metadata
    assert causal["data_ate_ci_low"].value < causal["data_ate"].value
    assert len(list(tmp_path.glob("**/twins_fidelity/**/fidelity_checks.json"))) == 1


@pytest.mark.parametrize("n_twins", [0, -5])
def test_non_positive_n_twins_fails_before_sampling(upstream, tmp_path, monkeypatch, n_twins):
    result = _materialize(upstream, tmp_path, monkeypatch, {
        "digital_twins": {"config": {"n_twins": n_twins}}},
        selection=["dataset", "digital_twins"])
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "n_twins" in failure.step_failure_data.error.message
    assert not (tmp_path / "digital_twins").exists()


def test_unknown_column_in_targeting_rule_fails_clearly(upstream, tmp_path, monkeypatch):
    result = _materialize(upstream, tmp_path, monkeypatch, {
        "digital_twins": {"config": {"n_twins": 2_000}},
        "twin_interventions": {"config": {"targeting": "query",
                                          "query": "engagment_score > 0.5"}},
    })
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert failure.step_key == "twin_interventions"
    message = failure.step_failure_data.error.message
    assert "unknown column 'engagment_score'" in message and "engagement_score" in message
    assert not (tmp_path / "twin_interventions").exists()


@pytest.mark.parametrize(("targeting", "problem"), [
    ({"targeting": "conditions", "conditions": [{"column": "region", "op": ">", "value": 1}]},
     "op '>' needs a numeric column; 'region'"),
    ({"targeting": "conditions",
      "conditions": [{"column": "engagement_score", "op": "==", "value": "high"}]},
     "holds number values; got text 'high'"),
    ({"targeting": "query", "query": "engagement_score.__class__ == 1"},
     "attribute access ('.__class__') is not allowed"),
])
def test_bad_targeting_fails_before_the_simulation(upstream, tmp_path, monkeypatch, targeting,
                                                   problem):
    result = _materialize(upstream, tmp_path, monkeypatch, {
        "digital_twins": {"config": {"n_twins": 2_000}},
        "twin_interventions": {"config": targeting},
    })
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert failure.step_key == "twin_interventions"
    assert problem in failure.step_failure_data.error.message
    assert not (tmp_path / "twin_interventions").exists()


def test_a_long_rule_materializes(upstream, tmp_path, monkeypatch):
    """The largest list a rule may hold (1000 values) runs and is recorded whole."""
    values = ["Northeast", *(f"region_{i:05d}" for i in range(999))]
    result = _materialize(upstream, tmp_path, monkeypatch, {
        "digital_twins": {"config": {"n_twins": 2_000}},
        "twin_interventions": {"config": {"targeting": "conditions", "conditions": [
            {"column": "region", "op": "in", "value": values}]}},
    })
    assert result.success
    meta = _metadata(result, "twin_interventions")
    assert len(meta["targeting_rule"]) > 6_000 and "region_00998" in meta["targeting_rule"]
    assert 0 < meta["treated_share_targeted"] < 0.5
