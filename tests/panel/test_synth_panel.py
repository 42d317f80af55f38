"""synthetic_control, synthetic_did and dose_response through ``run_panel``: a long panel
frame and a spec as a user gives them, the PanelResult tables, and bad input failing with a
named error before any estimation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.panel.run import run_panel
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.spec import spec_from_mapping

T, FIRST = 24, 16  # periods 2024-01..; treated from the 17th month


def _frame(n_donors: int = 15, n_treated: int = 1, effect: float = 3.0,
           staggered: bool = False, seed: int = 0) -> pd.DataFrame:
    """Territories: donors are random walks, treated ones convex combinations + effect."""
    rng = np.random.default_rng(seed)
    donors = 20 + rng.normal(size=(n_donors, T)).cumsum(axis=1)
    rows = []
    for i in range(n_treated):
        w = rng.dirichlet(np.ones(3))
        y = w @ donors[rng.choice(n_donors, 3, replace=False)] + rng.normal(scale=0.05,
                                                                             size=T)
        start = FIRST + (i if staggered else 0)
        y[start:] += effect
        rows += [(f"treated-{i}", t, int(t >= start), y[t]) for t in range(T)]
    for j in range(n_donors):
        rows += [(f"donor-{j}", t, 0, donors[j, t]) for t in range(T)]
    df = pd.DataFrame(rows, columns=["territory", "t", "launched", "trx"])
    df["month"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(df["t"] * 31, unit="D")
    df["month"] = df["month"].dt.to_period("M").dt.to_timestamp()
    return df.drop(columns="t")


def _spec(**extra):
    return spec_from_mapping({"design": "panel", "unit": "territory", "time": "month",
                              "treatment": "launched", "outcome": "trx", **extra})


def test_synthetic_control_through_run_panel() -> None:
    panel, r = run_panel(_frame(), _spec(), "synthetic_control", PanelSettings())
    assert abs(r.estimate - 3.0) < 0.3 and r.ci[0] < r.estimate < r.ci[1]
    s = r.summary()
    weights = s["extra"]["donor_weights"]["treated-0"]
    assert abs(sum(weights.values()) - 1) < 1e-6 and all(k.startswith("donor-") for k in weights)
    assert len(s["extra"]["gaps"]) == T and s["extra"]["gaps"][0]["period"] == "2024-01-01"
    assert s["extra"]["placebo_p_value"] == pytest.approx(1 / 16)
    es = r.event_study
    assert list(es["rel_period"])[:2] == [-FIRST, -FIRST + 1] and len(es) == T
    assert (es.loc[es.rel_period >= 0, "estimate"] > 2).all()
    assert (es.loc[es.rel_period < 0, "estimate"].abs() < 0.5).all()


def test_synthetic_did_through_run_panel() -> None:
    _, r = run_panel(_frame(n_donors=20, n_treated=2, seed=1), _spec(), "synthetic_did",
                     PanelSettings(n_bootstrap=50))
    assert r.ci[0] < 3.0 < r.ci[1]
    extra = r.summary()["extra"]
    assert abs(sum(extra["unit_weights"].values()) - 1) < 1e-6
    assert abs(sum(extra["time_weights"].values()) - 1) < 1e-6
    assert extra["replications"] == 50


def test_dose_response_through_run_panel() -> None:
    rng = np.random.default_rng(4)
    n_units, n_t = 200, 6
    unit = np.repeat(np.arange(n_units), n_t)
    x = rng.normal(size=n_units)[unit]
    dose = np.exp(0.3 * x + 0.4 * rng.normal(size=unit.size)) * 3
    y = 4 * np.log1p(dose) + x + rng.normal(size=unit.size)
    df = pd.DataFrame({"hcp": unit, "week": np.tile(np.arange(n_t), n_units),
                       "visits": dose, "trx": y, "x": x})
    spec = spec_from_mapping({"design": "panel", "unit": "hcp", "time": "week",
                              "treatment": "visits", "outcome": "trx", "common_causes": ["x"],
                              "treatment_type": "continuous"})
    _, r = run_panel(df, spec, "dose_response", PanelSettings())
    curve = r.summary()["extra"]["dose_response_curve"]
    assert len(curve) == 20 and r.method == "dose_response"
    doses = np.array([c["dose"] for c in curve])
    est = np.array([c["estimate"] for c in curve])
    assert np.abs(est - 4 * np.log1p(doses)).max() < 0.6
    assert "cluster-robust" in r.summary()["extra"]["se_type"]


def test_too_many_treated_units_fails_before_fitting(monkeypatch: pytest.MonkeyPatch) -> None:
    import e2i_pipelines.analytics.panel.synth as synth

    def _boom(*_a, **_k):
        raise AssertionError("fitted before validating")

    monkeypatch.setattr(synth, "simplex_least_squares", _boom)
    with pytest.raises(DataValidationError, match="at most 3 treated units"):
        run_panel(_frame(n_treated=4), _spec(), "synthetic_control",
                  PanelSettings(max_treated_units=3))


@pytest.mark.parametrize("method", ["synthetic_control", "synthetic_did"])
def test_staggered_adoption_rejected(method: str) -> None:
    with pytest.raises(DataValidationError, match="same period; the panel has 2 cohorts"):
        run_panel(_frame(n_treated=2, staggered=True), _spec(), method, PanelSettings())


def test_unbalanced_panel_rejected() -> None:
    df = _frame().iloc[:-1]
    with pytest.raises(DataValidationError, match="balanced panel"):
        run_panel(df, _spec(), "synthetic_control", PanelSettings())


def test_placebo_in_space_check_passes_with_effect_fails_without() -> None:
    from e2i_pipelines.analytics.panel.data import load_panel
    from e2i_pipelines.analytics.panel.synth import placebo_in_space_check

    settings = PanelSettings()
    # 24 donors: the smallest rank p-value, 1/25, is below alpha = 0.05 (1/16 would not be)
    passed, meta, fig = placebo_in_space_check(
        load_panel(_frame(n_donors=24, effect=3.0), _spec()), settings)
    assert passed and meta["placebo_p_value"] == pytest.approx(1 / 25)
    assert len(meta["donor_ratios"]) == 24 and meta["leave_one_out"]
    # dropping a donor the treated unit is built from worsens its fit, but not the sign
    assert all(1.0 < v < 5.0 for v in meta["leave_one_out"].values())
    assert meta["leave_one_out_sign_stable"]
    assert fig is not None
    passed0, meta0, _ = placebo_in_space_check(
        load_panel(_frame(n_donors=24, effect=0.0), _spec()), settings)
    assert not passed0 and meta0["placebo_p_value"] > 0.1
