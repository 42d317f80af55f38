"""Where users reach the panel designs (issue 28): inline panel keys in the dataset config,
bad panels and panel configs refused by the dataset step with nothing written, the last
pre-period cross-section for runs without a causal estimate (the twins), dose_response
options, and README's territories example run as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from e2i_pipelines.analytics.panel.data import last_pre_period
from e2i_pipelines.analytics.panel.run import run_panel
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.spec import spec_from_mapping
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.assets import causal_estimate
from e2i_pipelines.defs.causal.checks import causal_refutations, panel_checks
from e2i_pipelines.defs.causal.config import CausalEstimateConfig
from e2i_pipelines.defs.causal.diagnostics import causal_diagnostics
from e2i_pipelines.defs.data.assets import dataset
from e2i_pipelines.defs.data.config import DatasetConfig
from e2i_pipelines.defs.data.panel_input import cross_section_readers
from e2i_pipelines.defs.twins.assets import digital_twins
from tests.panel.conftest import panel_spec
from tests.panel.generated import staggered
from tests.panel.test_synth_panel import _frame as synth_frame

CAUSAL = [dataset, causal_estimate, causal_refutations, causal_diagnostics, panel_checks]
INLINE = {"design": "panel", "unit": "unit", "time": "time", "treatment": "d", "outcome": "y",
          "covariates": ["x"], "control_group": "not_yet_treated"}


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))


def _materialize(tmp_path: Path, df: pd.DataFrame, dataset_config: dict, *, assets=CAUSAL,
                 causal: dict | None = None, twins: dict | None = None,
                 logs: list[str] | None = None):
    path = tmp_path / "panel.csv"
    df.to_csv(path, index=False)
    resources = {"storage": E2IStorage(root=str(tmp_path / "data")),
                 "mlflow": MlflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
                 "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))}
    ops = {"dataset": {"config": {"source": "file", "path": str(path), **dataset_config}}}
    if causal is not None:
        ops["causal_estimate"] = {"config": {"n_bootstrap": 199, **causal}}
    if twins is not None:
        ops["digital_twins"] = {"config": twins}
    with dg.instance_for_test() as instance:
        result = dg.materialize(assets, resources=resources, instance=instance,
                                run_config={"ops": ops}, raise_on_error=False)
        if logs is not None:
            logs += [e.user_message for e in instance.all_logs(result.run_id)]
        return result


def _meta(result, node: str) -> dict:
    mat = result.asset_materializations_for_node(node)[0]
    return {k: v.value for k, v in mat.metadata.items()}


def _failure(result) -> tuple[str, str]:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return event.step_key, str(event.event_specific_data.error)


def test_inline_panel_keys_run_callaway_santanna(tmp_path):
    truth = staggered(n_units=500, n_periods=7, cohorts=(3, 5), seed=3)
    result = _materialize(tmp_path, truth.df.drop(columns=["g", "cluster"]), INLINE, causal={})
    assert result.success
    md = _meta(result, "causal_estimate")
    assert md["method"] == "callaway_santanna" and md["design"] == "panel"
    assert md["ci_low"] <= truth.true_att <= md["ci_high"]
    data = _meta(result, "dataset")
    assert data["panel_units"] == 500 and data["panel_periods"] == 7
    assert data["design"] == "panel" and data["panel_warnings"] == []


def test_the_panel_is_checked_once_in_the_dataset_step(tmp_path, monkeypatch):
    """The dataset step checks the panel in full; causal_estimate and panel_checks read it back
    with ``checked=True`` (cheap assertions only) and give the unchecked load's estimate."""
    from e2i_pipelines.analytics.panel import estimate_run, run

    loads: list[bool] = []

    def spy(original):
        def load(*args, **kwargs):
            loads.append(kwargs.get("checked", False))
            return original(*args, **kwargs)
        return load

    for module in (run, estimate_run):
        monkeypatch.setattr(module, "load_panel", spy(module.load_panel))
    df = staggered(n_units=400, n_periods=6, cohorts=(3, 5), seed=6).df.drop(
        columns=["g", "cluster"])
    result = _materialize(tmp_path, df, INLINE, causal={"method": "callaway_santanna"})
    assert result.success
    assert loads == [False, True, True]  # dataset step; estimate; panel_checks
    _, alone = run_panel(df, spec_from_mapping(INLINE), "callaway_santanna",
                         PanelSettings(n_bootstrap=199))
    assert abs(_meta(result, "causal_estimate")["estimate"] - alone.estimate) < 1e-12


def test_inline_keys_and_spec_file_give_the_same_spec(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(INLINE))
    from_file = DatasetConfig(source="dataset", id="ds_x", spec_path=str(spec_path))
    inline = DatasetConfig(source="dataset", id="ds_x", **INLINE)
    assert inline.resolve_spec() == from_file.resolve_spec()
    with pytest.raises(DataValidationError, match="either as 'spec_path' or inline"):
        DatasetConfig(source="dataset", id="ds_x", spec_path=str(spec_path),
                      design="panel").resolve_spec()


@pytest.mark.parametrize(("extra", "needle"), [
    ({"control_group": "sometimes"}, "spec key 'control_group'"),
    ({"treatment_off": "maybe"}, "spec key 'treatment_off'"),
    ({"treatment_type": "dose"}, "spec key 'treatment_type'"),
    ({"anticipation": -1}, "spec key 'anticipation'"),
    ({"design": "cross_section"}, "need design: panel"),
    ({"time": ""}, "needs spec key(s) ['time']"),
    ({"weights": "y"}, "name the same column 'y'"),
    ({"common_causes": ["x"]}, "give 'covariates' or 'common_causes', not both"),
])
def test_every_inline_panel_key_is_validated(extra, needle):
    with pytest.raises(DataValidationError) as info:
        DatasetConfig(source="dataset", id="ds_x", **{**INLINE, **extra}).resolve_spec()
    assert needle in str(info.value)


def _no_control(df: pd.DataFrame) -> pd.DataFrame:
    """Every unit launches in period 4: no never-treated and no not-yet-treated units."""
    return df.assign(d=(df["time"] >= 4).astype(int))


@pytest.mark.parametrize(("mutate", "causal", "needle"), [
    (lambda df: pd.concat([df, df.iloc[[5]]]), {}, "duplicate (unit, time)"),
    (lambda df: df.assign(d=df["d"].where(df["time"] != 7, 0)), {}, "switch treatment off"),
    (_no_control, {}, "no never-treated and no not-yet-treated"),
    (lambda df: df.assign(time=df["time"].astype(str) + "x"), {}, "not orderable"),
    (lambda df: df, {"method": "aipw"}, "panel designs take one of"),
    (lambda df: df, {"dose_knots": 50}, "dose_knots"),
])
def test_bad_panels_fail_in_the_dataset_step_with_nothing_written(tmp_path, mutate, causal,
                                                                  needle):
    df = mutate(staggered(n_units=200, n_periods=7, seed=1).df.drop(columns=["g", "cluster"]))
    result = _materialize(tmp_path, df, INLINE, causal=causal)
    assert not result.success
    step, error = _failure(result)
    assert step == "dataset" and needle in error, error
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_synthetic_control_limit_fails_in_the_dataset_step(tmp_path):
    spec = {"design": "panel", "unit": "territory", "time": "month", "treatment": "launched",
            "outcome": "trx"}
    result = _materialize(tmp_path, synth_frame(n_treated=4), spec,
                          causal={"method": "synthetic_control", "max_treated_units": 3})
    assert not result.success
    step, error = _failure(result)
    assert step == "dataset" and "at most 3 treated units" in error
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_last_pre_period_cross_section():
    truth = staggered(n_units=300, n_periods=7, cohorts=(4, 6), seed=2)
    df = truth.df.drop(columns=["cluster"]).sample(frac=1.0, random_state=0)
    cross = last_pre_period(df, panel_spec(covariates=["x"]))
    frame = cross.frame
    assert cross.period == "3" and (frame["time"] == 3).all()  # first launch in period 4
    assert len(frame) == 300 and frame["unit"].is_unique and cross.dropped_units == 0
    assert (frame["d"] == (frame["g"] > 0).astype(int)).all()  # treated later
    expected = df[df["time"] == 3].set_index("unit")["y"]
    assert np.allclose(frame.set_index("unit")["y"].loc[expected.index], expected)
    assert not cross.spec.panel and cross.spec.common_causes == ["x"]
    assert "last pre-period cross-section (period 3, 300 units" in cross.describe()
    anticipating = last_pre_period(df, panel_spec(covariates=["x"], anticipation=1))
    assert anticipating.period == "2"
    with pytest.raises(DataValidationError, match="treatment_type"):
        last_pre_period(df, panel_spec(treatment_type="continuous"))


def test_twins_take_the_last_pre_period_cross_section(tmp_path):
    df = staggered(n_units=600, n_periods=6, cohorts=(4, 5), seed=4).df.drop(
        columns=["g", "cluster"])
    logs: list[str] = []
    result = _materialize(tmp_path, df, INLINE, assets=[dataset, digital_twins],
                          twins={"n_twins": 2000, "chunk_rows": 1000, "fit_rows": 600,
                                 "min_stratum_rows": 10, "ks_rows": 500}, logs=logs)
    assert result.success
    data = _meta(result, "dataset")
    assert "last pre-period cross-section (period 3, 600 units" in data["panel_cross_section"]
    assert data["rows"] == 600
    assert any("design: panel -> the last pre-period cross-section" in m for m in logs)
    (saved,) = (tmp_path / "data").rglob("data.parquet")
    written = pd.read_parquet(saved)
    assert written["unit"].is_unique and set(written["d"]) == {0, 1}
    assert _meta(result, "digital_twins")


def test_main_job_twins_take_the_cross_section_and_the_estimate_the_panel(tmp_path):
    """A run with both (as e2i_main_job): the dataset is the last pre-period cross-section,
    which the twins read; causal_estimate reads the whole panel written beside it and gives
    the estimate of the panel alone."""
    df = staggered(n_units=600, n_periods=6, cohorts=(4, 5), seed=4).df.drop(
        columns=["g", "cluster"])
    logs: list[str] = []
    result = _materialize(tmp_path, df, INLINE, assets=[dataset, causal_estimate, digital_twins],
                          causal={"method": "callaway_santanna"},
                          twins={"n_twins": 2000, "chunk_rows": 1000, "fit_rows": 600,
                                 "min_stratum_rows": 10, "ks_rows": 500}, logs=logs)
    assert result.success
    data = _meta(result, "dataset")
    assert data["rows"] == 600 and data["panel_units"] == 600 and data["panel_periods"] == 6
    note = data["panel_cross_section"]
    assert "last pre-period cross-section (period 3, 600 units" in note
    assert "for digital_twins; causal_estimate reads the whole panel" in note
    assert any(note in m for m in logs)
    (cross,) = (tmp_path / "data").rglob("data.parquet")
    (whole,) = (tmp_path / "data").rglob("panel.parquet")
    assert cross.parent == whole.parent
    written = pd.read_parquet(cross)
    assert len(written) == 600 and written["unit"].is_unique and (written["time"] == 3).all()
    assert len(pd.read_parquet(whole)) == len(df)
    _, alone = run_panel(df, spec_from_mapping(INLINE), "callaway_santanna",
                         PanelSettings(n_bootstrap=199))
    estimate = _meta(result, "causal_estimate")
    assert abs(estimate["estimate"] - alone.estimate) < 1e-12
    assert _meta(result, "digital_twins")


def test_dose_options_reach_the_estimator():
    rng = np.random.default_rng(5)
    unit = np.repeat(np.arange(150), 4)
    visits = np.exp(0.4 * rng.normal(size=unit.size)) * 3
    df = pd.DataFrame({"hcp": unit, "week": np.tile(np.arange(4), 150), "visits": visits,
                       "trx": 4 * np.log1p(visits) + rng.normal(size=unit.size)})
    spec = panel_spec(unit="hcp", time="week", treatment="visits", outcome="trx",
                      treatment_type="continuous")
    _, bins = run_panel(df, spec, "dose_response",
                        PanelSettings(dose_basis="bins", dose_knots=6, folds=3))
    assert bins.extra["basis"] == "bins" and bins.extra["knots"] == 6
    assert bins.extra["folds"] == 3
    _, linear = run_panel(df, spec, "dose_response", PanelSettings(dose_basis="linear"))
    points = linear.extra["dose_response_curve"]
    slopes = np.diff([c["estimate"] for c in points]) / np.diff([c["dose"] for c in points])
    assert np.allclose(slopes, slopes[0], rtol=1e-9)  # a line
    with pytest.raises(DataValidationError, match="too few for 80-fold"):
        run_panel(df, spec, "dose_response", PanelSettings(folds=80))


@pytest.mark.parametrize(("field", "value"), [("dose_basis", "cubic"), ("dose_knots", 0),
                                              ("dose_knots", 21), ("folds", 1)])
def test_dose_config_is_validated(field, value):
    with pytest.raises(dg.Failure) as info:
        CausalEstimateConfig(**{field: value}).check()
    assert field in str(info.value)


def _territories(seed: int = 11) -> tuple[pd.DataFrame, float]:
    """README's territories: monthly nrx, staggered launches, clustered by region."""
    truth = staggered(n_units=400, n_periods=8, cohorts=(3, 5, 6), seed=seed)
    df = truth.df
    rng = np.random.default_rng(seed)
    month = pd.Timestamp("2024-01-01") + pd.to_timedelta((df["time"] - 1) * 31, unit="D")
    df = pd.DataFrame({
        "territory": "T" + df["unit"].astype(str).str.zfill(3),
        "month": month.dt.strftime("%Y-%m"), "launched": df["d"], "nrx": df["y"],
        "baseline_nrx": df["x"], "n_hcps": rng.integers(20, 80, size=400)[df["unit"]],
        "region": "R" + (df["unit"] // 10).astype(str)})
    return df, truth.true_att


def test_readme_territories_example_runs_as_written(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(# territories_spec\.yaml.*?)```", readme, re.S)
    spec_text, config_text = block.split("\n---\n")
    (tmp_path / "territories_spec.yaml").write_text(spec_text)
    df, true_att = _territories()
    result = _materialize(tmp_path, df, {"spec_path": str(tmp_path / "territories_spec.yaml")},
                          causal=yaml.safe_load(config_text))
    assert result.success
    md = _meta(result, "causal_estimate")
    assert md["method"] == "callaway_santanna"
    assert md["ci_low"] <= true_att <= md["ci_high"]
    assert md["n_units"] == 400 and md["n_periods"] == 8
    (saved,) = (tmp_path / "data").rglob("panel_estimate.json")
    assert json.loads(saved.read_text())["event_study"]
    checks = {e.check_name for e in result.get_asset_check_evaluations()}
    assert checks == {"pre_trends", "placebo_in_time", "placebo_in_space"}


def test_readme_inline_example_is_the_spec_file_example():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (file_block,) = re.findall(r"```yaml\n(# territories_spec\.yaml.*?)```", readme, re.S)
    (inline_block,) = re.findall(r"```yaml\n(# inline: ops\.dataset\.config.*?)```", readme,
                                 re.S)
    from_file = spec_from_mapping(yaml.safe_load(file_block.split("\n---\n")[0]))
    inline = DatasetConfig(**yaml.safe_load(inline_block)).resolve_spec()
    assert inline == from_file


def test_which_jobs_keep_the_panel():
    """causal_job (and e2i_main_job) estimate on the panel; twins_job takes the cross-section."""
    from e2i_pipelines.definitions import defs
    from e2i_pipelines.defs.causal.config import planned_estimate

    assert planned_estimate(defs.resolve_job_def("twins_job"), {}) is None
    planned = planned_estimate(defs.resolve_job_def("causal_job"),
                               {"ops": {"causal_estimate": {"config": {"method": "did"}}}})
    assert planned.method == "did"
    assert planned_estimate(defs.resolve_job_def("causal_job"), {}).method == "auto"
    assert cross_section_readers(defs.resolve_job_def("causal_job")) == []
    assert "digital_twins" in cross_section_readers(defs.resolve_job_def("twins_job"))
    main = defs.resolve_job_def("e2i_main_job")
    assert planned_estimate(main, {}) is not None  # both: the panel and its cross-section
    assert {"digital_twins", "shap_explanations", "feature_store"} <= set(
        cross_section_readers(main))
