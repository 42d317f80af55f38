"""Balance, overlap and sensitivity diagnostics on generated data with known truth."""

from __future__ import annotations

import json
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import statsmodels.api as sm
from matplotlib.figure import Figure

from e2i_pipelines.analytics.causal.diagnostics import balance as bal
from e2i_pipelines.analytics.causal.diagnostics import inputs
from e2i_pipelines.analytics.causal.diagnostics import overlap as ovl
from e2i_pipelines.analytics.causal.diagnostics import sensitivity as sens

NAMES4 = ["age", "income", "urban", "score"]


def _confounded(n: int, seed: int):
    """(X, true propensity, t): t depends on three of the four covariates."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.standard_normal(n), rng.standard_normal(n),
                         (rng.random(n) < 0.4).astype(float), rng.standard_normal(n)])
    e = 1 / (1 + np.exp(-(0.9 * X[:, 0] - 0.7 * X[:, 1] + 0.8 * X[:, 2] - 0.3)))
    return X, e, rng.random(n) < e


def _sensemakr(y, t, X, names, q=1.0, alpha=0.05, kd=(1, 2, 3)):
    """PySensemakr on the statsmodels OLS fit y ~ 1 + t + X."""
    import sensemakr

    df = pd.DataFrame(X, columns=names)
    df.insert(0, "t", np.asarray(t, dtype=float))
    fit = sm.OLS(y, sm.add_constant(df)).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sensemakr.Sensemakr(model=fit, treatment="t", benchmark_covariates=list(names),
                                   kd=list(kd), q=q, alpha=alpha)


def _outcome_data(n: int, seed: int, effect: float, beta_strong: float):
    """(y, t, X): X[:, 0] ('strong') confounds t and y; the other two are weak."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    t = rng.random(n) < 1 / (1 + np.exp(-1.2 * X[:, 0]))
    y = effect * t + beta_strong * X[:, 0] + 0.1 * X[:, 1] + rng.standard_normal(n)
    return y, t, X


STRONG3 = ["strong", "weak1", "weak2"]


# ----------------------------------------------------------------------------- balance


def test_smd_by_hand():
    X = np.array([[1, 0, 7], [2, 0, 7], [3, 0, 7], [4, 1, 7], [5, 1, 7], [6, 1, 7]], float)
    t = np.array([1, 1, 1, 0, 0, 0])
    w = np.array([1, 1, 2, 1, 1, 1], float)
    table = bal.balance_table(X, ["x", "arm_constant", "constant"], t, w)
    assert table.columns.tolist() == ["covariate", "smd_before", "smd_after"]
    assert table["covariate"].tolist() == ["x", "arm_constant", "constant"]
    # x: means 2 vs 5, variances 1 and 1; weighted treated mean (1 + 2 + 6) / 4 = 2.25
    assert table.loc[0, "smd_before"] == pytest.approx(-3.0)
    assert table.loc[0, "smd_after"] == pytest.approx(-2.75)
    assert table.loc[1, "smd_before"] == -np.inf  # constant within each arm, different means
    assert table.loc[2, "smd_before"] == 0.0 and table.loc[2, "smd_after"] == 0.0


def test_balance_table_equals_direct_computation(monkeypatch):
    monkeypatch.setattr(inputs, "BLOCK_ROWS", 1000)  # several blocks
    rng = np.random.default_rng(1)
    n = 5500
    offset = np.array([0.0, -20.0, 1e6])  # column c: tiny spread around a huge mean
    X = rng.standard_normal((n, 3)) * [1.0, 5.0, 1e-3] + offset
    t = rng.random(n) < 0.3
    w = rng.gamma(2.0, size=n)
    table = bal.balance_table(X, ["a", "b", "c"], t.astype(int), w)
    X = X - offset  # the reference on (exactly) shifted columns: same SMDs, no cancellation
    sd = np.sqrt((X[t].var(axis=0, ddof=1) + X[~t].var(axis=0, ddof=1)) / 2)
    before = (X[t].mean(axis=0) - X[~t].mean(axis=0)) / sd
    after = (np.average(X[t], axis=0, weights=w[t])
             - np.average(X[~t], axis=0, weights=w[~t])) / sd
    np.testing.assert_allclose(table["smd_before"], before, rtol=1e-9)
    np.testing.assert_allclose(table["smd_after"], after, rtol=1e-9)


def test_true_ipw_weights_balance_a_confounded_design():
    X, e, t = _confounded(20_000, seed=0)
    ipw = np.where(t, 1 / e, 1 / (1 - e))
    table = bal.balance_table(X, NAMES4, t, ipw)
    assert table["smd_before"].abs().iloc[:3].min() > 0.25  # confounders are imbalanced raw
    assert table["smd_after"].abs().max() <= bal.BALANCE_THRESHOLD
    assert bal.balance_passed(table)
    uniform = bal.balance_table(X, NAMES4, t, np.ones(len(t)))
    np.testing.assert_allclose(uniform["smd_after"], uniform["smd_before"], atol=1e-12)
    assert not bal.balance_passed(uniform)


def test_balance_passed_boundary_and_nan():
    table = pd.DataFrame({"covariate": ["a", "b"], "smd_before": [0.5, 0.5],
                          "smd_after": [0.1, -0.1]})
    assert bal.balance_passed(table)
    assert not bal.balance_passed(table, threshold=0.05)
    assert not bal.balance_passed(table.assign(smd_after=[0.0, np.nan]))


def test_balance_rejects_bad_inputs():
    X = np.zeros((4, 1))
    with pytest.raises(ValueError, match="both treatment arms"):
        bal.balance_table(X, ["a"], np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="bool or 0/1"):
        bal.balance_table(X, ["a"], np.array([0, 1, 2, 1]), np.ones(4))
    with pytest.raises(ValueError, match="names"):
        bal.balance_table(X, ["a", "b"], np.array([0, 1, 0, 1]), np.ones(4))


# ----------------------------------------------------------------------------- overlap


@pytest.mark.parametrize(("outside", "status"), [(0, "pass"), (50, "warn"), (200, "fail")])
def test_overlap_status(outside, status):
    n = 1000
    t = np.arange(n) % 2 == 0
    e = np.full(n, 0.5)
    e[:2] = [ovl.OVERLAP_BOUNDS[0], ovl.OVERLAP_BOUNDS[1]]  # on the bounds: inside
    e[n - outside:] = np.where(np.arange(outside) % 2 == 0, 0.001, 0.999)
    summary = ovl.overlap_summary(e, t)
    assert summary["status"] == status
    assert summary["share_outside"] == pytest.approx(outside / n)
    assert summary["share_outside_treated"] == pytest.approx(outside / n)  # half each arm
    assert summary["share_outside_control"] == pytest.approx(outside / n)
    assert summary["min_propensity_treated"] == (0.001 if outside else ovl.OVERLAP_BOUNDS[0])
    assert summary["max_propensity_control"] == (0.999 if outside else ovl.OVERLAP_BOUNDS[1])
    assert all(isinstance(v, float | str) for v in summary.values())
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert "pass if <= 0.01" in summary["rule"]


def test_overlap_per_arm_shares_and_nan():
    t = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    e = np.array([0.5, 0.995, 0.5, 0.5, np.nan, 0.5, 0.5, 0.5, 0.5, 0.5])
    summary = ovl.overlap_summary(e, t, bounds=(0.05, 0.95))
    assert summary["share_outside"] == pytest.approx(0.2)
    assert summary["share_outside_treated"] == pytest.approx(0.25)
    assert summary["share_outside_control"] == pytest.approx(1 / 6)
    assert summary["status"] == "fail"


# ----------------------------------------------------------------------------- sensitivity


@pytest.fixture(scope="module")
def small():
    """2,000 rows, 4 covariates with different scales and offsets, true effect 0.5."""
    X, _, t = _confounded(2000, seed=7)
    X = X * [1.0, 3.0, 1.0, 0.2] + [40.0, -5.0, 0.0, 100.0]
    rng = np.random.default_rng(8)
    y = 0.5 * t + X @ [0.05, 0.1, 0.3, 0.5] + rng.standard_normal(len(t))
    return y, t, X


@pytest.mark.parametrize("q", [1.0, 0.5])
def test_sensitivity_equals_pysensemakr(small, q):
    y, t, X = small
    ours = sens.sensitivity(y, t, X, NAMES4, q=q, alpha=0.05, kd=(1, 2, 3))
    ref = _sensemakr(y, t, X, NAMES4, q=q, alpha=0.05)
    stats = ref.sensitivity_stats
    assert ours.dof == stats["dof"] == len(y) - 6
    for mine, theirs in [(ours.estimate, stats["estimate"]), (ours.se, stats["se"]),
                         (q * ours.t_value, stats["t_statistic"]),
                         (ours.partial_r2_yd, stats["r2yd_x"]), (ours.rv_q, stats["rv_q"]),
                         (ours.rv_qa, stats["rv_qa"])]:
        assert mine == pytest.approx(theirs, rel=1e-8, abs=1e-12)
    bench, bounds = ours.benchmarks, ref.bounds
    assert bench["bound_label"].tolist() == bounds["bound_label"].tolist()
    for col in ["r2dz_x", "r2yz_dx", "adjusted_estimate", "adjusted_se", "adjusted_t"]:
        np.testing.assert_allclose(bench[col], bounds[col], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(bench["adjusted_lower_ci"], bounds["adjusted_lower_CI"], rtol=1e-8)
    np.testing.assert_allclose(bench["adjusted_upper_ci"], bounds["adjusted_upper_CI"], rtol=1e-8)


def test_rv_qa_is_zero_when_not_significant():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    t = rng.random(300) < 0.5
    y = X @ [0.5, 0.3, 0.1] + rng.standard_normal(300)  # no effect
    ours = sens.sensitivity(y, t, X, STRONG3)
    assert abs(ours.t_value) < st.t.ppf(0.975, ours.dof - 1)  # precondition of the edge case
    assert ours.rv_qa == 0.0 and ours.rv_q > 0
    ref = _sensemakr(y, t, X, STRONG3).sensitivity_stats
    assert ref["rv_qa"] == 0.0
    assert ours.rv_q == pytest.approx(ref["rv_q"], rel=1e-8)


@pytest.mark.parametrize("effect", [1.0, -1.0])
def test_strong_effect_with_weak_confounding_passes(effect):
    y, t, X = _outcome_data(5000, seed=1, effect=effect, beta_strong=0.1)
    result = sens.sensitivity(y, t, X, STRONG3)
    assert result.estimate == pytest.approx(effect, abs=0.1)
    assert result.strongest == "strong"
    assert result.passed is True
    assert "strong" in result.rule


def test_effect_as_small_as_the_strong_confounders_bias_fails():
    y, t, X = _outcome_data(5000, seed=1, effect=0.1, beta_strong=0.1)
    result = sens.sensitivity(y, t, X, STRONG3)
    assert result.strongest == "strong"
    row = result.strongest_bounds().iloc[0]
    assert row["k"] == 1.0 and row["bias"] == pytest.approx(result.estimate, rel=0.3)
    assert row["adjusted_lower_ci"] < 0 < row["adjusted_upper_ci"]  # CI contains 0
    assert result.passed is False


def test_estimate_more_than_explained_away_fails():
    y, t, X = _outcome_data(5000, seed=1, effect=0.1, beta_strong=0.3)
    result = sens.sensitivity(y, t, X, STRONG3)
    row = result.strongest_bounds().iloc[0]
    assert result.estimate > 0 and row["adjusted_upper_ci"] < 0  # CI excludes 0, other sign
    assert result.passed is False


def test_infeasible_benchmark_bound_fails():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((3000, 2))
    t = X[:, 0] + 0.1 * rng.standard_normal(3000) > 0  # r2 of X0 with t ~ 0.6 > 0.5
    y = t + X[:, 0] + rng.standard_normal(3000)
    result = sens.sensitivity(y, t, X, ["dominant", "other"], kd=(1.0,))
    bench = result.benchmarks.set_index("covariate")
    assert not bench.loc["dominant", "feasible"] and bench.loc["other", "feasible"]
    assert np.isnan(bench.loc["dominant", "adjusted_estimate"])
    assert result.strongest == "dominant" and result.passed is False
    meta = result.metadata()
    assert meta["benchmarks"][0]["covariate"] == "dominant"
    assert meta["benchmarks"][0]["adjusted_estimate"] is None
    json.dumps(meta, allow_nan=False)


def test_no_covariates():
    rng = np.random.default_rng(3)
    t = rng.random(500) < 0.4
    y = 2.0 * t + rng.standard_normal(500)
    result = sens.sensitivity(y, t, np.empty((500, 0)), [])
    fit = sm.OLS(y, sm.add_constant(t.astype(float))).fit()
    assert result.estimate == pytest.approx(y[t].mean() - y[~t].mean(), rel=1e-10)
    assert result.se == pytest.approx(fit.bse[1], rel=1e-10)
    assert result.dof == 498
    assert result.strongest is None and result.passed is None
    assert result.benchmarks.empty
    meta = result.metadata()
    assert meta["benchmarks"] == [] and meta["passed"] is None
    json.dumps(meta, allow_nan=False)
    plt.close(sens.sensitivity_contour_plot(result))


def test_metadata_is_json_and_keeps_top_covariates():
    rng = np.random.default_rng(4)
    n, p = 3000, 15
    X = rng.standard_normal((n, p))
    strength = np.linspace(0.0, 0.3, p)
    t = rng.random(n) < 1 / (1 + np.exp(-X @ strength))
    y = t + X @ strength + rng.standard_normal(n)
    names = [f"x{j}" for j in range(p)]
    result = sens.sensitivity(y, t, X, names)
    meta = result.metadata()
    assert json.loads(json.dumps(meta, allow_nan=False))["strongest"] == result.strongest
    assert meta["n_benchmark_covariates"] == p and meta["benchmarks_truncated"]
    assert len(meta["benchmarks"]) == sens.METADATA_MAX_COVARIATES * 3
    assert meta["benchmarks"][0]["covariate"] == result.strongest
    assert [r["k"] for r in meta["benchmarks"][:3]] == [1.0, 2.0, 3.0]
    assert isinstance(meta["passed"], bool) and isinstance(meta["dof"], int)


def test_collinear_design_is_rejected():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((100, 2))
    X = np.column_stack([X, X[:, 0] + X[:, 1]])
    with pytest.raises(ValueError, match="collinear"):
        sens.sensitivity(rng.standard_normal(100), rng.random(100) < 0.5, X, ["a", "b", "c"])


def test_one_million_rows_thirty_covariates():
    rng = np.random.default_rng(6)
    n, p = 1_000_000, 30
    X = rng.standard_normal((n, p))
    e = 1 / (1 + np.exp(-0.2 * X[:, 0]))
    t = rng.random(n) < e
    y = 1.0 * t + X @ np.full(p, 0.1) + rng.standard_normal(n)
    names = [f"x{j}" for j in range(p)]
    table = bal.balance_table(X, names, t, np.where(t, 1 / e, 1 / (1 - e)))
    assert len(table) == p and bal.balance_passed(table)
    assert ovl.overlap_summary(e, t)["status"] == "pass"
    result = sens.sensitivity(y, t, X, names)
    assert result.estimate == pytest.approx(1.0, abs=0.01)
    assert result.strongest == "x0" and result.passed is True
    assert len(result.benchmarks) == 3 * p


# ----------------------------------------------------------------------------- plots


def test_plots_return_figures(small):
    y, t, X = small
    X_c, e, t_c = _confounded(2000, seed=0)
    figures = [
        bal.love_plot(bal.balance_table(X_c, NAMES4, t_c, np.where(t_c, 1 / e, 1 / (1 - e)))),
        ovl.overlap_plot(e, t_c),
    ]
    result = sens.sensitivity(y, t, X, NAMES4)
    contour = sens.sensitivity_contour_plot(result)
    figures.append(contour)
    try:
        assert all(isinstance(f, Figure) for f in figures)
        texts = [a.get_text() for a in contour.axes[0].texts]
        for k in ("1", "2", "3"):
            assert any(s.startswith(f"{k}x {result.strongest}") for s in texts)
    finally:
        for f in figures:
            plt.close(f)
