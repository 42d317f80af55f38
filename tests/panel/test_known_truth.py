"""Known truth: staggered adoption with effects growing in event time and differing by cohort
(TWFE's CI misses the true ATT, Callaway-Sant'Anna covers it overall and in every event-time
bin); a linear pre-trend fails the pre-trend check; the placebo in time."""

import pytest

from e2i_pipelines.analytics.panel.checks import pre_trends, run_checks
from e2i_pipelines.analytics.panel.data import load_panel
from e2i_pipelines.analytics.panel.run import METHODS, run_panel
from e2i_pipelines.analytics.panel.settings import PanelSettings
from tests.panel.conftest import panel_spec
from tests.panel.generated import staggered

SPEC = panel_spec(covariates=["x"])


@pytest.fixture(scope="module")
def truth():
    return staggered(n_units=3000, n_periods=8, growth=0.5, cohort_slope=0.4, seed=21)


def test_twfe_misses_and_callaway_santanna_covers(truth):
    _, twfe = run_panel(truth.df, SPEC, "did", PanelSettings())
    _, cs = run_panel(truth.df, SPEC, "callaway_santanna", PanelSettings(seed=1))
    assert not twfe.ci[0] <= truth.true_att <= twfe.ci[1], (twfe.ci, truth.true_att)
    assert twfe.ci[1] < truth.true_att  # biased towards the short-run effects
    assert cs.ci[0] <= truth.true_att <= cs.ci[1], (cs.ci, truth.true_att)
    lags = cs.event_study[cs.event_study["rel_period"] >= 0]
    assert len(lags) == len(truth.true_by_event)
    for row in lags.itertuples():
        true = truth.true_by_event[int(row.rel_period)]
        assert row.band_low <= true <= row.band_high, (row, true)


def test_linear_pre_trend_fails_the_pre_trend_check():
    biased = staggered(n_units=2000, n_periods=8, pre_trend=0.15, seed=5)
    check = pre_trends(load_panel(biased.df, SPEC), PanelSettings())
    assert check.passed is False and check.metadata["p_value"] < 0.01
    assert check.metadata["df"] == len(check.metadata["leads"]) >= 3
    assert check.figure is not None
    # relative magnitudes (M-bar = 1) covers the true average post-period effect, which the
    # event study's own average misses (the linear trend biases every lag)
    honest = check.metadata["honest_bound"]
    true_avg = sum(biased.true_by_event.values()) / len(biased.true_by_event)
    assert honest["ci_low"] <= true_avg <= honest["ci_high"], (honest, true_avg)
    assert honest["estimate"] - true_avg > 0.15 * 3  # the bias grows with event time


@pytest.mark.parametrize("method", ["callaway_santanna", "did"])
def test_checks_pass_under_parallel_trends_and_fail_under_a_pre_trend(method):
    clean = load_panel(staggered(n_units=2000, n_periods=8, seed=2).df, SPEC)
    outcomes = {c.name: c for c in run_checks(clean, method, PanelSettings(), METHODS)}
    assert outcomes["pre_trends"].passed and outcomes["placebo_in_time"].passed
    assert abs(outcomes["placebo_in_time"].metadata["placebo_effect"]) < 0.15
    trend = load_panel(staggered(n_units=2000, n_periods=8, pre_trend=0.2, seed=2).df, SPEC)
    outcomes = {c.name: c for c in run_checks(trend, method, PanelSettings(), METHODS)}
    assert outcomes["pre_trends"].passed is False
    assert outcomes["placebo_in_time"].passed is False


def test_placebo_skips_with_a_reason_when_no_pre_period_is_left():
    df = staggered(n_units=300, n_periods=4, cohorts=(2,), seed=3).df
    outcome = run_checks(load_panel(df, SPEC), "did", PanelSettings(placebo_shift=1),
                         METHODS, only=("placebo_in_time",))[0]
    assert outcome.passed is None and "no cohort has a period before" in outcome.skipped
