"""Attacks on the inline panel keys and the panel run config as the API's ``params`` carry
them: values are data (never code, never a path), each bad value is refused before launch
naming its key, and the dataset step's panel check never echoes cell values."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from e2i_pipelines.catalog import ParamsValidationError, load_catalog
from e2i_pipelines.core.data_root import DataScope
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.defs.causal.config import planned_estimate
from e2i_pipelines.defs.data.config import DatasetConfig
from e2i_pipelines.defs.data.panel_input import prepare_panel

SECRET = "AKIA-SECRET-TOKEN-12345"
PANEL = {"source": "file", "path": "territories.csv", "treatment": "d", "outcome": "y",
         "design": "panel", "unit": "unit", "time": "time"}


@pytest.fixture
def causal_job(tmp_path, monkeypatch):
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))
    (tmp_path / "territories.csv").write_text("unit,time,d,y\n")
    return load_catalog().get("causal_job")


def test_inline_panel_params_reach_the_run_config(causal_job):
    validated = causal_job.validate_params(
        {"dataset": {**PANEL, "control_group": "not_yet_treated", "anticipation": 1},
         "causal_estimate": {"method": "dose_response", "dose_basis": "bins"}})
    ops = causal_job.run_config(validated)["ops"]
    assert ops["dataset"]["config"]["control_group"] == "not_yet_treated"
    assert ops["dataset"]["config"]["anticipation"] == 1
    assert ops["causal_estimate"]["config"]["dose_basis"] == "bins"


@pytest.mark.parametrize(("params", "loc", "needle"), [
    ({"dataset": {**PANEL, "anticipation": "1; DROP TABLE runs"}}, ("dataset", "anticipation"),
     "valid integer"),
    ({"dataset": {**PANEL, "control_group": "__import__('os').system('id')"}}, ("dataset",),
     "spec key 'control_group'"),
    ({"dataset": {**PANEL, "treatment_off": "{{7*7}}"}}, ("dataset",), "'treatment_off'"),
    ({"dataset": {**PANEL, "design": "panel; rm -rf /"}}, ("dataset",), "spec key 'design'"),
    ({"dataset": {**PANEL, "covariates": [{"$ne": 1}]}}, ("dataset", "covariates", 0),
     "valid string"),
    ({"dataset": {**PANEL, "anticipation": -5}}, ("dataset",), "'anticipation' must be"),
    ({"causal_estimate": {"dose_basis": "eval('1')"}}, ("causal_estimate",), "dose_basis"),
    ({"causal_estimate": {"dose_knots": 10**9}}, ("causal_estimate",), "dose_knots"),
])
def test_bad_panel_params_are_refused_before_launch(causal_job, params, loc, needle):
    with pytest.raises(ParamsValidationError) as info:
        causal_job.validate_params(params)
    (error,) = info.value.errors
    assert error["loc"] == loc and needle in error["msg"], error


def test_panel_column_keys_are_column_names_not_paths(tmp_path, monkeypatch):
    """A path in 'unit'/'time'/'weights' is a column name: no file is resolved or read."""
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))
    config = DatasetConfig(**{**PANEL, "source": "dataset", "path": "", "id": "ds_x",
                              "unit": "/etc/passwd", "weights": "../../root/.ssh/id_rsa"})
    scoped = config.with_scope(DataScope(client="client-a"))
    assert scoped.data_folder == "client-a"
    spec = scoped.resolve_spec()
    assert spec.unit == "/etc/passwd" and spec.weights == "../../root/.ssh/id_rsa"


class _Context:
    """What prepare_panel reads of a step context: the job, the run config, a logger."""

    def __init__(self, job_def, run_config):
        self.job_def, self.run = job_def, type("Run", (), {"run_config": run_config})()
        self.messages: list[str] = []
        self.log = type("Log", (), {"info": self.messages.append})()


def _causal_job_def():
    from e2i_pipelines.definitions import defs

    return defs.resolve_job_def("causal_job")


def test_dataset_step_panel_errors_do_not_echo_cells():
    df = pd.DataFrame({"unit": [SECRET, SECRET, "b", "b"], "time": [1, 1, 1, 2],
                       "d": [0, 0, 0, 0], "y": [1.0, 2.0, 1.0, 1.0]})
    spec = DatasetConfig(**{**PANEL, "source": "dataset", "path": "",
                            "id": "ds_x"}).resolve_spec()
    context = _Context(_causal_job_def(), {"ops": {}})
    with pytest.raises(DataValidationError) as info:
        prepare_panel(context, df, spec)
    assert "duplicate" in str(info.value) and SECRET not in str(info.value)


def test_run_config_code_is_refused_by_the_step_check():
    """The dataset step re-validates the run's causal_estimate config (never evaluated)."""
    planned = planned_estimate(_causal_job_def(),
                               {"ops": {"causal_estimate": {"config": {"method": "eval"}}}})
    with pytest.raises(dg.Failure, match="method"):
        planned.check()
