"""Which panel checks apply to which method, and the placebo in space wired to part B's
synthetic-control check."""

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.panel.checks import PANEL_CHECKS, run_checks
from e2i_pipelines.analytics.panel.data import load_panel
from e2i_pipelines.analytics.panel.run import METHODS
from e2i_pipelines.analytics.panel.settings import PanelSettings
from tests.panel.conftest import panel_spec
from tests.panel.generated import staggered


def _one_treated(effect: float, seed: int = 0) -> pd.DataFrame:
    """Unit 0 = 0.6 donor 1 + 0.4 donor 2 (+ effect from period 15); 19 random-walk donors."""
    rng = np.random.default_rng(seed)
    n, T = 20, 20
    Y = 10 + rng.normal(size=(n, T)).cumsum(axis=1)
    Y[0] = 0.6 * Y[1] + 0.4 * Y[2] + rng.normal(scale=0.05, size=T)
    Y[0, 15:] += effect
    unit, t = np.repeat(np.arange(n), T), np.tile(np.arange(T), n)
    return pd.DataFrame({"unit": unit, "time": t, "d": ((unit == 0) & (t >= 15)).astype(int),
                         "y": Y[unit, t]})


def test_placebo_in_space_for_synthetic_control_and_skips_elsewhere():
    panel = load_panel(_one_treated(effect=5.0), panel_spec())
    by_synth = {c.name: c for c in run_checks(panel, "synthetic_control", PanelSettings(),
                                               METHODS)}
    assert set(by_synth) == set(PANEL_CHECKS)
    space = by_synth["placebo_in_space"]
    assert space.skipped is None and space.passed is True
    assert space.metadata["placebo_p_value"] <= 0.05 and space.figure is not None
    for name in ("pre_trends", "placebo_in_time"):
        assert by_synth[name].passed is None and "synthetic_control" in by_synth[name].skipped
    by_cs = {c.name: c for c in run_checks(panel, "callaway_santanna", PanelSettings(),
                                            METHODS, only=("placebo_in_space",))}
    assert by_cs["placebo_in_space"].passed is None  # one treated cohort: nothing to leave out
    assert "at least 2 treated cohorts" in by_cs["placebo_in_space"].skipped
    by_dose = {c.name: c for c in run_checks(panel, "dose_response", PanelSettings(), METHODS,
                                              only=("placebo_in_space",))}
    assert "not dose_response" in by_dose["placebo_in_space"].skipped


def test_no_effect_placebo_in_space_does_not_pass():
    panel = load_panel(_one_treated(effect=0.0), panel_spec())
    (space,) = run_checks(panel, "synthetic_control", PanelSettings(), METHODS,
                          only=("placebo_in_space",))
    assert space.passed is False and space.metadata["placebo_p_value"] > 0.05


def _cohorts(only_cohort: int | None, seed: int = 3) -> pd.DataFrame:
    """Three cohorts (3, 5, 6) with a constant effect 1; with ``only_cohort`` only that cohort
    has an effect (2.0), the others none."""
    df = staggered(n_units=2000, n_periods=8, growth=0.0, cohort_slope=0.0, covariate=False,
                   seed=seed).df
    if only_cohort is not None:
        df["y"] += df["d"] * np.where(df["g"] == only_cohort, 1.0, -1.0)
    return df


def test_leave_one_cohort_out_passes_when_every_cohort_has_the_effect():
    panel = load_panel(_cohorts(None), panel_spec())
    for method in ("callaway_santanna", "did"):
        (space,) = run_checks(panel, method, PanelSettings(n_bootstrap=99), METHODS,
                              only=("placebo_in_space",))
        rows = space.metadata["leave_one_cohort_out"]
        assert space.passed is True, rows
        assert [r["cohort"] for r in rows] == ["3", "5", "6"]
        assert all(0.8 < r["estimate"] < 1.2 and r["ci_low"] > 0 for r in rows)
        assert space.figure is not None


def test_leave_one_cohort_out_fails_when_one_cohort_carries_the_effect():
    """Only cohort 6 is affected: the full estimate is clearly positive, but without cohort 6
    it is ~0 and its CI covers 0, so the check fails and names that cohort."""
    panel = load_panel(_cohorts(6), panel_spec())
    for method in ("callaway_santanna", "did"):
        (space,) = run_checks(panel, method, PanelSettings(n_bootstrap=99), METHODS,
                              only=("placebo_in_space",))
        assert space.metadata["ci_low"] > 0
        rows = {r["cohort"]: r for r in space.metadata["leave_one_cohort_out"]}
        assert space.passed is False
        assert rows["6"]["conclusion_holds"] is False
        assert rows["6"]["ci_low"] <= 0.0 <= rows["6"]["ci_high"]
        assert rows["3"]["conclusion_holds"] and rows["5"]["conclusion_holds"]
        assert rows["6"]["units_dropped"] == int((panel.cohort == panel.cohort.max()).sum())
