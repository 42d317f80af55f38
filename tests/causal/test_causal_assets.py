"""The causal_estimate asset and its five refutation checks, materialized for real."""

import dagster as dg
import pytest

from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.assets import causal_estimate
from e2i_pipelines.defs.causal.checks import causal_refutations
from e2i_pipelines.defs.causal.diagnostics import causal_diagnostics
from e2i_pipelines.defs.data.assets import dataset
from e2i_pipelines.tiers import TIER_TAG

REFUTERS = {"placebo_treatment", "random_common_cause", "data_subset", "bootstrap",
            "unobserved_common_cause"}


@pytest.fixture
def resources(tmp_path):
    return {
        "storage": E2IStorage(root=str(tmp_path / "data")),
        "mlflow": MlflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io")),
    }


def _run_config(**causal):
    return {"ops": {"dataset": {"config": {"n_rows": 3000, "seed": 2}},
                    "causal_estimate": {"config": {"num_simulations": 40, **causal}}}}


def _materialize(resources, **causal):
    with dg.instance_for_test() as instance:
        result = dg.materialize([dataset, causal_estimate, causal_refutations, causal_diagnostics],
                                resources=resources, instance=instance,
                                run_config=_run_config(**causal), raise_on_error=False)
        return result


def test_estimate_and_checks_materialize(resources):
    result = _materialize(resources)
    assert result.success
    mat = result.asset_materializations_for_node("causal_estimate")[0]
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["method"] == "linear_regression" and md["n_rows"] == 3000
    assert md["ci_low"] < md["estimate"] < md["ci_high"]
    assert "true_ate" in md and isinstance(md["true_ate_in_ci"], bool)
    # the generator's outcome is linear with treatment x modifier terms: the CI covers truth
    assert md["true_ate_in_ci"], md
    evaluations = [e for e in result.get_asset_check_evaluations() if e.check_name in REFUTERS]
    assert {e.check_name for e in evaluations} == REFUTERS
    diagnostics = {e.check_name for e in result.get_asset_check_evaluations()} - REFUTERS
    assert diagnostics == {"covariate_balance", "overlap", "sensitivity"}
    for e in evaluations:
        meta = {k: v.value for k, v in e.metadata.items()}
        assert meta["engine"] == "fast"
        assert "new_effect" in meta and "plot" in meta and "rule" in meta
        if e.check_name != "unobserved_common_cause":
            assert 0.0 <= meta["p_value"] <= 1.0
            assert meta["num_simulations"] == 40
        else:
            assert meta["bound_low"] <= meta["bound_high"]
    placebo = next(e for e in evaluations if e.check_name == "placebo_treatment")
    assert placebo.passed  # no effect of a random placebo on a correctly specified model


def test_tiers_are_heavy():
    assert causal_estimate.op.tags[TIER_TAG] == "heavy"
    assert causal_refutations.op.tags[TIER_TAG] == "heavy"
    assert causal_refutations.op.pool == "e2i-heavy"


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("method", "causal_forest", "method"),
    ("num_simulations", 0, "num_simulations"),
    ("confidence_level", 1.5, "confidence_level"),
])
def test_bad_config_fails_before_reading_data(resources, field, value, needle):
    result = _materialize(resources, **{field: value})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert needle in message and "config invalid" in message
    assert result.asset_materializations_for_node("causal_estimate") == []


def test_treatment_missing_from_data_fails_clearly(resources, tmp_path):
    import pandas as pd

    from e2i_pipelines.core.refs import DatasetRef
    from e2i_pipelines.core.spec import CausalSpec

    path = tmp_path / "d.parquet"
    pd.DataFrame({"id": [1, 2], "x": [0.1, 0.2], "y": [1.0, 2.0]}).to_parquet(path)
    ref = DatasetRef(path=str(path), spec=CausalSpec("treated", "y", ["x"], id_column="id"),
                     n_rows=2, id_column="id")

    @dg.asset(name="dataset")
    def fake_dataset() -> DatasetRef:
        return ref

    with dg.instance_for_test() as instance:
        result = dg.materialize([fake_dataset, causal_estimate], resources=resources,
                                instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "treatment 'treated'" in message


def test_propensity_weighting_uses_score_engine(resources):
    result = _materialize(resources, method="propensity_score_weighting", num_simulations=5,
                          grid_points=2, refit_simulations=2)
    assert result.success
    mat = result.asset_materializations_for_node("causal_estimate")[0]
    assert mat.metadata["method"].value == "propensity_score_weighting"
    evaluations = result.get_asset_check_evaluations()
    refutations = [e for e in evaluations if e.check_name in REFUTERS]
    assert {e.check_name for e in refutations} == REFUTERS
    assert {e.metadata["engine"].value for e in refutations} == {"scores"}
