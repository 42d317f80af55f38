"""causal_job on a panel CSV + spec, materialized in-process: the estimate with its event
study and cohort table, the panel checks, the cross-section checks skipped with the reason,
and bad panels/configs failing before heavy work with nothing written."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.assets import causal_estimate
from e2i_pipelines.defs.causal.checks import causal_refutations, panel_checks
from e2i_pipelines.defs.causal.diagnostics import causal_diagnostics
from e2i_pipelines.defs.data.assets import dataset
from tests.panel.generated import staggered

SPEC = ("design: panel\nunit: unit\ntime: time\ntreatment: d\noutcome: y\n"
        "covariates: [x]\ncontrol_group: not_yet_treated\n")


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))


def _run(tmp_path, df, spec=SPEC, **causal):
    path, spec_path = tmp_path / "territories.csv", tmp_path / "spec.yaml"
    df.to_csv(path, index=False)
    spec_path.write_text(spec)
    resources = {"storage": E2IStorage(root=str(tmp_path / "data")),
                 "mlflow": MlflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
                 "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))}
    config = {"ops": {"dataset": {"config": {"source": "file", "path": str(path),
                                             "spec_path": str(spec_path)}},
                      "causal_estimate": {"config": {"n_bootstrap": 199, **causal}}}}
    with dg.instance_for_test() as instance:
        return dg.materialize([dataset, causal_estimate, causal_refutations, causal_diagnostics,
                               panel_checks], resources=resources, instance=instance,
                              run_config=config, raise_on_error=False)


def test_callaway_santanna_through_causal_job(tmp_path):
    truth = staggered(n_units=600, n_periods=7, cohorts=(3, 5), seed=8)
    result = _run(tmp_path, truth.df.drop(columns=["g", "cluster"]))
    assert result.success
    mat = result.asset_materializations_for_node("causal_estimate")[0]
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["method"] == "callaway_santanna" and md["design"] == "panel"
    assert md["ci_low"] <= truth.true_att <= md["ci_high"]
    assert md["n_units"] == 600 and md["n_periods"] == 7
    assert [r["rel_period"] for r in md["event_study"]] == list(range(-3, 5))
    assert [r["cohort"] for r in md["cohorts"]] == [3, 5]
    assert "event_study_plot" in md
    assert set(md["skipped_checks"]) >= {"placebo_treatment", "overlap"}
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {"pre_trends", "placebo_in_time", "placebo_in_space"}
    loo = {k: v.value for k, v in checks["placebo_in_space"].metadata.items()}
    assert [r["cohort"] for r in loo["leave_one_cohort_out"]] == ["3", "5"] and "plot" in loo
    assert checks["placebo_in_space"].passed == all(
        r["conclusion_holds"] for r in loo["leave_one_cohort_out"])
    pre = {k: v.value for k, v in checks["pre_trends"].metadata.items()}
    assert 0 <= pre["p_value"] <= 1 and "plot" in pre
    assert checks["pre_trends"].passed == (pre["p_value"] >= 0.05)  # calibration: test_known_truth
    placebo = {k: v.value for k, v in checks["placebo_in_time"].metadata.items()}
    assert checks["placebo_in_time"].passed == (placebo["ci_low"] <= 0 <= placebo["ci_high"])
    (saved,) = (tmp_path / "data").rglob("panel_estimate.json")
    summary = json.loads(saved.read_text())
    assert summary["estimate"] == pytest.approx(md["estimate"]) and summary["event_study"]


def test_did_through_causal_job_warns_on_staggered_adoption(tmp_path):
    truth = staggered(n_units=400, n_periods=6, cohorts=(3, 5), seed=9)
    result = _run(tmp_path, truth.df.drop(columns=["g"]), SPEC + "cluster: cluster\n",
                  method="did")
    assert result.success
    md = {k: v.value for k, v in
          result.asset_materializations_for_node("causal_estimate")[0].metadata.items()}
    assert md["method"] == "did"
    assert any("staggered adoption" in w for w in md["panel_warnings"])


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda df: df.assign(time=df["time"].astype(str) + "x"), "not orderable"),
    (lambda df: df.drop(columns="g").pipe(lambda d: d.loc[d.index.repeat(1 + (d.index == 5))]),
     "duplicate (unit, time)"),
    (lambda df: df.assign(d=df["d"].where(df["time"] != 7, 0)), "switch treatment off"),
    (lambda df: df.assign(d=0), "has a single value"),  # the dataset step refuses it
])
def test_bad_panels_fail_before_estimation_with_nothing_written(tmp_path, mutate, needle):
    df = mutate(staggered(n_units=200, n_periods=7, seed=1).df)
    result = _run(tmp_path, df)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert needle in str(failure.event_specific_data.error)
    assert not list((tmp_path / "data").rglob("panel_estimate.json"))


def test_panel_method_needs_a_panel_design(tmp_path):
    result = _run(tmp_path, staggered(n_units=200, seed=1).df, method="synthetic_whatever")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "method" in str(failure.event_specific_data.error)


def test_readme_panel_spec_parses():
    """The panel spec README "Your own data" shows is a valid spec."""
    import re
    from pathlib import Path

    import yaml

    from e2i_pipelines.core.spec import spec_from_mapping

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(# territories_spec\.yaml.*?)```", readme, re.S)
    spec_doc, config_doc = list(yaml.safe_load_all(block))
    spec = spec_from_mapping(spec_doc)
    assert spec.panel and spec.unit == "territory" and spec.cluster == "region"
    assert spec.common_causes == ["baseline_nrx", "n_hcps"]
    from e2i_pipelines.defs.causal.config import CausalEstimateConfig

    CausalEstimateConfig(**config_doc).check()
