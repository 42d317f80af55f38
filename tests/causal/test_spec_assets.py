"""The causal job on users' files: experiments, declared categoricals, graphs, missing rows,
targets, and bad input that fails before heavy work with nothing written."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest

from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.assets import causal_estimate
from e2i_pipelines.defs.causal.checks import causal_refutations
from e2i_pipelines.defs.causal.diagnostics import causal_diagnostics
from e2i_pipelines.defs.data.assets import dataset
from tests.causal import generated as gen

DIAGNOSTICS = {"covariate_balance", "overlap", "sensitivity"}


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    """Graph and data files must lie under the data root; here the test's tmp folder."""
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))


def _resources(tmp_path):
    return {"storage": E2IStorage(root=str(tmp_path / "data")),
            "mlflow": MlflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
            "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))}


def _run(tmp_path, data_config: dict, causal: dict | None = None, with_checks: bool = True,
         diagnose: bool = True):
    assets = [dataset, causal_estimate, *([causal_refutations] if with_checks else []),
              *([causal_diagnostics] if diagnose else [])]
    config = {"ops": {"dataset": {"config": {"source": "file", **data_config}},
                      "causal_estimate": {"config": {"num_simulations": 30, **(causal or {})}}}}
    with dg.instance_for_test() as instance:
        return dg.materialize(assets, resources=_resources(tmp_path), instance=instance,
                              run_config=config, raise_on_error=False)


def _estimate_md(result) -> dict:
    mat = result.asset_materializations_for_node("causal_estimate")[0]
    return {k: v.value for k, v in mat.metadata.items()}


def _failure(result) -> str:
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures
    return str(failures[0].event_specific_data.error)


def test_randomised_experiment_end_to_end(tmp_path):
    path = tmp_path / "ab.csv"
    gen.randomised(3000, seed=1).to_csv(path, index=False)
    result = _run(tmp_path, {"path": str(path), "treatment": "t", "outcome": "y",
                             "common_causes": []})
    assert result.success
    md = _estimate_md(result)
    assert md["method"] == "difference_in_means" and md["design"] == "randomised"
    assert md["ci_low"] <= 1.5 <= md["ci_high"]
    assert md["adjustment_set"] == []
    reason = "skipped: no confounders (randomised design)"
    assert md["skipped_checks"] == {"random_common_cause": reason,
                                    "unobserved_common_cause": reason,
                                    **{d: reason for d in DIAGNOSTICS}}
    evaluated = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluated) == {"placebo_treatment", "data_subset", "bootstrap"}
    assert all(e.passed for e in evaluated.values())
    (saved,) = (tmp_path / "data").rglob("refutations.json")
    skipped = {r["name"]: r["skipped"] for r in json.loads(saved.read_text())
               if r.get("skipped")}
    assert skipped == {"random_common_cause": reason, "unobserved_common_cause": reason}


def test_declared_categorical_reaches_the_estimate(tmp_path):
    path = tmp_path / "regions.parquet"
    gen.coded_categories(6000, seed=3).to_parquet(path)
    spec = tmp_path / "spec.yaml"
    spec.write_text("treatment: t\noutcome: y\ncommon_causes: [region]\n"
                    "categorical: [region]\n")
    result = _run(tmp_path, {"path": str(path), "spec_path": str(spec)},
                  {"method": "propensity_score_weighting", "refit_simulations": 2,
                   "grid_points": 2}, with_checks=False)
    assert result.success
    md = _estimate_md(result)
    assert md["ci_low"] <= 1.0 <= md["ci_high"], md
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == DIAGNOSTICS
    balance = {k: v.value for k, v in checks["covariate_balance"].metadata.items()}
    assert balance["max_abs_smd_before"] > 0.1 >= balance["max_abs_smd_after"]
    assert checks["covariate_balance"].passed
    assert "plot" in balance


def test_graph_identifies_the_adjustment_set_and_excludes_collider_and_mediator(tmp_path):
    df, truth = gen.collider_mediator(6000, seed=4)
    path = tmp_path / "g.parquet"
    df.to_parquet(path)
    (tmp_path / "dag.dot").write_text(gen.GRAPH_DOT)
    spec = tmp_path / "spec.yaml"
    spec.write_text("treatment: t\noutcome: y\ngraph: dag.dot\n")  # relative to the spec file
    result = _run(tmp_path, {"path": str(path), "spec_path": str(spec)}, with_checks=False)
    assert result.success
    data_md = {k: v.value for k, v in
               result.asset_materializations_for_node("dataset")[0].metadata.items()}
    assert data_md["adjustment_set"] == ["w"]
    md = _estimate_md(result)
    assert md["adjustment_set"] == ["w"] and "graph" in md["adjustment_from"]
    assert md["ci_low"] <= truth <= md["ci_high"], md
    # adjusting for the collider (and the mediator) as if they were confounders is biased
    biased = _run(tmp_path / "b", {"path": str(path), "treatment": "t", "outcome": "y",
                                   "common_causes": ["w", "m", "c"]}, with_checks=False)
    bmd = _estimate_md(biased)
    assert not bmd["ci_low"] <= truth <= bmd["ci_high"], bmd
    assert abs(bmd["estimate"] - truth) > 1.0


def test_missing_drop_records_rows_per_column(tmp_path):
    df = gen.nonlinear_confounding(800, seed=5)
    df.loc[:9, "x0"] = np.nan
    df.loc[5:24, "y"] = np.nan
    path = tmp_path / "holes.csv"
    df.to_csv(path, index=False)
    base = {"path": str(path), "treatment": "t", "outcome": "y", "common_causes": ["x0", "x1"]}
    message = _failure(_run(tmp_path, base, with_checks=False))
    assert "'y' has 20 missing" in message
    result = _run(tmp_path / "d", {**base, "missing": "drop"}, with_checks=False)
    assert result.success
    md = {k: v.value for k, v in
          result.asset_materializations_for_node("dataset")[0].metadata.items()}
    assert md["nan_rows_per_column"] == {"x0": 10, "y": 20}
    assert md["rows_dropped"] == 25 and md["rows"] == 775
    assert _estimate_md(result)["n_rows"] == 775


def test_target_att_through_run_config(tmp_path):
    df, ate, att = gen.heterogeneous(8000, seed=6)
    path = tmp_path / "h.parquet"
    df.to_parquet(path)
    result = _run(tmp_path, {"path": str(path), "treatment": "t", "outcome": "y",
                             "common_causes": ["x0", "x1"], "effect_modifiers": ["x0"],
                             "target": "att"},
                  {"method": "aipw", "folds": 3}, with_checks=False)
    assert result.success
    md = _estimate_md(result)
    assert md["target"] == "att" and md["ci_low"] <= att <= md["ci_high"], (md, att)
    records = md["cate_records"]
    assert len(records) == 4 and all(r["ci_low"] <= r["estimate"] <= r["ci_high"]
                                     for r in records)
    assert "cate_plot" in md


CYCLE = "digraph { t -> y; y -> x; x -> t; }"


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"graph": CYCLE}, "cycle"),
    ({"graph": "digraph { w -> t; w -> y; t -> y; ghost -> t; ghost -> y; }"}, "ghost"),
    ({"graph": 'digraph { u [observed="no"]; u -> t; u -> y; t -> y; x0 -> y; }'},
     "not identifiable"),
    ({"categorical": ["colour"]}, "colour"),
    ({"common_causes": ["x0"], "missing": "drop", "_all_nan": True}, "missing: drop leaves 0"),
])
def test_bad_input_fails_before_heavy_work_and_writes_nothing(tmp_path, overrides, needle):
    df = gen.nonlinear_confounding(300, seed=7)
    if overrides.pop("_all_nan", False):
        df["x0"] = np.nan
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    config = {"path": str(path), "treatment": "t", "outcome": "y",
              "common_causes": ["x0"], **overrides}
    if "graph" in overrides:
        config["common_causes"] = []
    message = _failure(_run(tmp_path, config, with_checks=False))
    assert needle in message and "dataset config/data invalid" in message, message
    written = tmp_path / "data"
    assert not written.exists() or not any(p.is_file() for p in written.rglob("*")), message


def test_unknown_target_is_a_config_error(tmp_path):
    path = tmp_path / "d.csv"
    gen.randomised(100).to_csv(path, index=False)
    with pytest.raises(dg.DagsterInvalidConfigError, match="target"):
        _run(tmp_path, {"path": str(path), "treatment": "t", "outcome": "y", "target": "late"})
    spec = tmp_path / "spec.yaml"
    spec.write_text("treatment: t\noutcome: y\ncommon_causes: []\ntarget: late\n")
    message = _failure(_run(tmp_path, {"path": str(path), "spec_path": str(spec)}))
    assert "spec key 'target' is 'late'" in message


def test_readme_spec_examples_are_valid_specs():
    """The three specs README "Your own data" shows parse, and the graph one identifies."""
    import re
    from pathlib import Path

    import yaml

    from e2i_pipelines.core.spec import spec_from_mapping

    readme = Path(__file__).resolve().parents[2] / "README.md"
    blocks = re.findall(r"```yaml\n(# 1\. A randomised.*?)```", readme.read_text(), re.S)
    specs = [spec_from_mapping(d) for d in yaml.safe_load_all(blocks[0])]
    assert [s.randomised for s in specs] == [True, False, False]
    assert specs[1].categorical == ["region", "plan_level"] and specs[1].target == "att"
    assert specs[2].adjustment_set == ["tenure"]
