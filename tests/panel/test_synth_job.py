"""synthetic_control, synthetic_did and dose_response through causal_job on a panel CSV and a
spec file, as a user feeds them; a synthetic-control run with more treated units than
max_treated_units fails before heavy work with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.panel.test_panel_job import _run
from tests.panel.test_synth_panel import _frame


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("E2I_DATA_ROOT", str(tmp_path))


SPEC = ("design: panel\nunit: territory\ntime: month\ntreatment: launched\noutcome: trx\n")


def _meta(result) -> dict:
    mat = result.asset_materializations_for_node("causal_estimate")[0]
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.mark.parametrize("method", ["synthetic_control", "synthetic_did"])
def test_synthetic_methods_through_causal_job(tmp_path, method: str) -> None:
    result = _run(tmp_path, _frame(n_donors=20, effect=3.0), SPEC, method=method,
                  n_bootstrap=99)
    assert result.success
    md = _meta(result)
    assert md["method"] == method and md["design"] == "panel"
    assert md["ci_low"] <= 3.0 <= md["ci_high"], md
    (saved,) = (tmp_path / "data").rglob("panel_estimate.json")
    extra = json.loads(saved.read_text())["extra"]
    weights = extra["donor_weights"]["treated-0"] if method == "synthetic_control" \
        else extra["unit_weights"]
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-6)
    if method == "synthetic_control":
        assert extra["placebo_p_value"] == pytest.approx(1 / 21)
        assert len(extra["gaps"]) == 24
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    space = checks["placebo_in_space"]  # 20 donors: p = 1/21 <= 0.05, leave-one-out stable
    meta = {k: v.value for k, v in space.metadata.items()}
    assert space.passed and meta["placebo_p_value"] == pytest.approx(1 / 21), meta
    assert meta["leave_one_out_sign_stable"] and "plot" in meta


def test_dose_response_through_causal_job(tmp_path) -> None:
    rng = np.random.default_rng(5)
    unit = np.repeat(np.arange(150), 4)
    x = rng.normal(size=150)[unit]
    visits = np.exp(0.3 * x + 0.4 * rng.normal(size=unit.size)) * 3
    df = pd.DataFrame({"hcp": unit, "week": np.tile(np.arange(4), 150), "visits": visits,
                       "x": x, "trx": 4 * np.log1p(visits) + x + rng.normal(size=unit.size)})
    spec = ("design: panel\nunit: hcp\ntime: week\ntreatment: visits\noutcome: trx\n"
            "covariates: [x]\ntreatment_type: continuous\n")
    result = _run(tmp_path, df, spec)  # method auto -> dose_response
    assert result.success
    md = _meta(result)
    assert md["method"] == "dose_response"
    (saved,) = (tmp_path / "data").rglob("panel_estimate.json")
    curve = json.loads(saved.read_text())["extra"]["dose_response_curve"]
    assert len(curve) == 20 and all(c["ci_low"] <= c["estimate"] <= c["ci_high"] for c in curve)


def test_too_many_treated_units_fail_before_heavy_work(tmp_path) -> None:
    result = _run(tmp_path, _frame(n_treated=4), SPEC, method="synthetic_control",
                  max_treated_units=3)
    assert not result.success
    text = " ".join(str(e.event_specific_data) for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE")
    assert "at most 3 treated units" in text
    assert not list((tmp_path / "data").rglob("panel_estimate.json"))
