"""Attacks on the panel spec keys and panel config: values are data (never code), errors
name the key and never echo cell values."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from e2i_pipelines.analytics.panel.data import load_panel
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.spec import spec_from_mapping
from e2i_pipelines.defs.causal.config import CausalEstimateConfig

SECRET = "AKIA-SECRET-TOKEN-12345"
CODE = "__import__('os').system('touch /tmp/e2i_panel_pwned')"


def _spec(**extra):
    return spec_from_mapping({"treatment": "d", "outcome": "y", "design": "panel",
                              "unit": "unit", "time": "time", **extra})


@pytest.mark.parametrize(("extra", "needle"), [
    ({"unit": ["unit"]}, "'unit' must be a str"),
    ({"anticipation": "1; rm -rf /"}, "'anticipation' must be a int"),
    ({"anticipation": True}, "'anticipation' must be an int"),
    ({"anticipation": -3}, "'anticipation' must be an integer >= 0"),
    ({"control_group": CODE}, "'control_group'"),
    ({"treatment_type": "continuous; DROP TABLE runs"}, "'treatment_type'"),
    ({"design": "panel", "unit": "y"}, "name the same column"),
    ({"weights": {"$ne": 1}}, "'weights' must be a str"),
])
def test_bad_spec_values_name_the_key(extra, needle):
    with pytest.raises(DataValidationError) as info:
        _spec(**extra)
    assert needle in str(info.value)


def test_code_in_cells_and_column_names_is_data(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    df = pd.DataFrame({code: ["a", "a", "b", "b"], "time": [1, 2, 1, 2], "d": [0, 1, 0, 0],
                       "y": [1.0, 2.0, 1.0, 1.0]})
    panel = load_panel(df, _spec(unit=code))
    assert panel.n_units == 2 and not marker.exists()
    df["time"] = [code, SECRET, code, SECRET]
    with pytest.raises(DataValidationError) as info:
        load_panel(df, _spec(unit=code))
    assert "not orderable" in str(info.value)
    assert SECRET not in str(info.value) and "pathlib" not in str(info.value)
    assert not marker.exists()


def test_duplicate_rows_do_not_echo_cell_values():
    df = pd.DataFrame({"unit": [SECRET, SECRET, "b", "b"], "time": [1, 1, 1, 2],
                       "d": [0, 0, 0, 0], "y": [1.0, 2.0, 1.0, 1.0]})
    with pytest.raises(DataValidationError) as info:
        load_panel(df, _spec())
    assert "duplicate" in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize(("field", "value"), [
    ("cs_method", "dr; import os"), ("wild_weights", CODE), ("n_bootstrap", 10**9),
    ("placebo_shift", 0), ("method", "eval"),
])
def test_bad_panel_config_is_refused(field, value):
    with pytest.raises(dg.Failure) as info:
        CausalEstimateConfig(**{field: value}).check()
    assert field in str(info.value)
