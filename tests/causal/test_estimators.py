"""Estimators on generated data with known truth: the right method covers it, a wrong one not."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from e2i_pipelines.analytics.causal.estimate import estimate_effect, prepare_frame
from e2i_pipelines.analytics.causal.estimators import EffectData, propensity_score_weighting
from e2i_pipelines.analytics.causal.refuters import run_refuters
from e2i_pipelines.analytics.causal.segments import cate_table
from e2i_pipelines.analytics.causal.settings import EstimatorSettings, RefuterSettings
from e2i_pipelines.analytics.causal.weights import logistic_propensity, with_intercept
from e2i_pipelines.core.spec import CausalSpec, DataValidationError
from tests.causal import generated as gen

SETTINGS = EstimatorSettings(n_jobs=2, folds=3, nuisance_trees=100, seed=1)


def _fit(df, spec, method, settings=SETTINGS):
    frame = prepare_frame(df, spec)
    result, fit, dowhy_fit = estimate_effect(frame, method, settings=settings)
    return frame, result, fit, dowhy_fit


def covers(result, truth):
    return result.ci_low <= truth <= result.ci_high


@pytest.fixture(scope="module")
def nonlinear():
    return gen.nonlinear_confounding(8000, seed=4), CausalSpec("t", "y", ["x0", "x1", "x2", "x3"])


def test_nonlinear_confounding_ols_biased_aipw_and_dml_cover(nonlinear):
    df, spec = nonlinear
    _, ols, _, _ = _fit(df, spec, "linear_regression")
    assert not covers(ols, 2.0), ols  # a linear outcome model cannot adjust for sin/square terms
    assert abs(ols.estimate - 2.0) > 0.3
    for method in ("aipw", "dml"):
        _, res, fit, _ = _fit(df, spec, method)
        assert covers(res, 2.0), (method, res)
        assert res.ci_high - res.ci_low < 0.5
        assert fit.propensity is not None and fit.propensity.shape == (len(df),)


def test_aipw_linear_nuisance_is_the_wrong_model_here(nonlinear):
    df, spec = nonlinear
    _, res, _, _ = _fit(df, spec, "aipw",
                        EstimatorSettings(n_jobs=2, folds=3, nuisance="linear", seed=1))
    # both nuisances misspecified: doubly robust needs one of them right
    assert not covers(res, 2.0), res


def test_randomised_difference_in_means_hc2_and_refuters():
    df = gen.randomised(4000, seed=2)
    spec = CausalSpec("t", "y", [])
    frame, res, fit, _ = _fit(df, spec, "auto")
    assert res.method == "difference_in_means" and res.design == "randomised"
    assert covers(res, 1.5)
    ols = sm.OLS(df["y"].to_numpy(float), sm.add_constant(df["t"].to_numpy(float))).fit(
        cov_type="HC2")
    assert res.estimate == pytest.approx(ols.params[1], abs=1e-10)
    assert res.std_error == pytest.approx(ols.bse[1], rel=1e-10)
    results = {r.name: r for r in run_refuters(frame, fit, None, RefuterSettings(
        num_simulations=60, seed=3, bootstrap_noise=0), refit=lambda _f: pytest.fail("randomised: no refit"))}
    for name in ("random_common_cause", "unobserved_common_cause"):
        assert results[name].skipped == "skipped: no confounders (randomised design)"
        assert results[name].passed is None
    for name in ("placebo_treatment", "data_subset", "bootstrap"):
        assert results[name].skipped is None and results[name].passed, results[name]
        assert results[name].simulations.size == 60
    assert abs(results["placebo_treatment"].new_effect) < 0.2


def test_methods_needing_covariates_reject_a_randomised_spec():
    df = gen.randomised(500, seed=2)
    frame = prepare_frame(df, CausalSpec("t", "y", []))
    for method in ("aipw", "dml", "propensity_score_weighting"):
        with pytest.raises(DataValidationError, match="randomised design"):
            estimate_effect(frame, method)


@pytest.mark.parametrize("method", ["linear_regression", "propensity_score_weighting"])
def test_declared_categoricals_remove_the_bias_numeric_codes_leave(method):
    df = gen.coded_categories(20000, seed=5)
    _, numeric, _, _ = _fit(df, CausalSpec("t", "y", ["region"]), method)
    _, declared, _, _ = _fit(df, CausalSpec("t", "y", ["region"], categorical=["region"]),
                             method)
    assert not covers(numeric, 1.0), numeric
    assert covers(declared, 1.0), declared
    assert abs(declared.estimate - 1.0) < abs(numeric.estimate - 1.0) / 3


def test_att_and_ate_differ_and_each_covers_its_truth():
    df, ate, att = gen.heterogeneous(30000, seed=6)
    assert att - ate > 0.5  # the design makes them differ
    found = {}
    for target in ("ate", "att"):
        spec = CausalSpec("t", "y", ["x0", "x1"], target=target)
        for method in ("aipw", "propensity_score_weighting"):
            _, res, _, _ = _fit(df, spec, method)
            assert res.target == target
            found[target, method] = res
    for method in ("aipw", "propensity_score_weighting"):
        assert covers(found["ate", method], ate), found["ate", method]
        assert covers(found["att", method], att), found["att", method]
        assert not covers(found["att", method], ate)


def test_linear_regression_att_with_effect_modifier():
    df, ate, att = gen.heterogeneous(30000, seed=7)
    for target, truth in (("ate", ate), ("att", att)):
        spec = CausalSpec("t", "y", ["x0", "x1"], effect_modifiers=["x0"], target=target)
        _, res, _, _ = _fit(df, spec, "linear_regression")
        assert covers(res, truth), (target, res)


def test_cate_segments_cover_the_segment_truth():
    df, _, _ = gen.heterogeneous(30000, seed=8)
    spec = CausalSpec("t", "y", ["x1"], effect_modifiers=["x0"])
    frame, _, fit, _ = _fit(df, spec, "aipw")
    t = frame.data[frame.treatment].to_numpy(bool)
    table = cate_table(frame.tree_frame, t, ["x0"], [], fit, 4, 0.95)
    assert len(table) == 4 and table["n_rows"].sum() == len(df)
    x0 = df["x0"].to_numpy()
    edges = np.quantile(x0, [0, 0.25, 0.5, 0.75, 1.0])
    for i, row in table.iterrows():
        inside = (x0 >= edges[i]) & (x0 <= edges[i + 1])
        truth = float(np.mean(1 + 2 * x0[inside]))
        assert row["ci_low"] <= truth <= row["ci_high"], (row.to_dict(), truth)
    assert table["estimate"].is_monotonic_increasing


def test_ipw_sandwich_se_equals_numerical_m_estimation():
    """The analytic sandwich equals A^-1 B A^-T with A from finite differences."""
    df = gen.nonlinear_confounding(3000, seed=9)
    X = df[["x0", "x1"]].to_numpy(float)
    t, y = df["t"].to_numpy(bool), df["y"].to_numpy(float)
    Xi, tf = with_intercept(X), t.astype(float)
    for target in ("ate", "att", "atc"):
        data = EffectData(t=t, y=y, X=X, names=["x0", "x1"], tree_frame=df[["x0", "x1"]],
                          target=target)
        fit = propensity_score_weighting(data, EstimatorSettings())
        e, beta = logistic_propensity(X, t)

        def weights(e, target=target):
            return {"ate": (1 / e, 1 / (1 - e)), "att": (np.ones_like(e), e / (1 - e)),
                    "atc": ((1 - e) / e, np.ones_like(e))}[target]

        w1, w0 = weights(e)
        m1 = (w1 * tf * y).sum() / (w1 * tf).sum()
        m0 = (w0 * (1 - tf) * y).sum() / (w0 * (1 - tf)).sum()
        theta = np.r_[beta, m1, m0]

        def psi(th):
            ee = 1 / (1 + np.exp(-Xi @ th[:3]))
            a, b = weights(ee)
            return np.column_stack([Xi * (tf - ee)[:, None], a * tf * (y - th[3]),
                                    b * (1 - tf) * (y - th[4])])

        A = np.empty((5, 5))
        for j in range(5):
            d = np.zeros(5)
            d[j] = 1e-6
            A[:, j] = -(psi(theta + d).mean(0) - psi(theta - d).mean(0)) / 2e-6
        P = psi(theta)
        Ainv = np.linalg.inv(A)
        V = Ainv @ (P.T @ P / len(y)) @ Ainv.T / len(y)
        c = np.r_[0, 0, 0, 1, -1]
        assert fit.estimate == pytest.approx(m1 - m0, abs=1e-10)
        assert fit.se == pytest.approx(float(np.sqrt(c @ V @ c)), rel=1e-6)


def test_trimming_drops_rows_outside_the_bounds():
    df, _, _ = gen.heterogeneous(5000, seed=10)
    spec = CausalSpec("t", "y", ["x0", "x1"])
    _, full, fit_full, _ = _fit(df, spec, "propensity_score_weighting")
    _, trimmed, fit_trim, _ = _fit(df, spec, "propensity_score_weighting",
                                   EstimatorSettings(trim=0.1))
    e = fit_full.propensity
    assert trimmed.details["n_trimmed"] == int(((e < 0.1) | (e > 0.9)).sum()) > 0
    assert full.details["n_trimmed"] == 0
    assert (fit_trim.weights[(e < 0.1) | (e > 0.9)] == 0).all()
    # stabilised ATE weights average ~1 in each arm
    t = df["t"].to_numpy(bool)
    assert fit_full.weights[t].mean() == pytest.approx(1, abs=0.15)


def test_dml_rejects_att():
    df = gen.nonlinear_confounding(500, seed=1)
    frame = prepare_frame(df, CausalSpec("t", "y", ["x0"], target="att"))
    with pytest.raises(DataValidationError, match="dml"):
        estimate_effect(frame, "dml")


def test_score_refuters_on_aipw(nonlinear):
    df, spec = nonlinear
    frame, res, fit, _ = _fit(df, spec, "aipw")
    calls = []

    def refit(changed):
        calls.append(changed)
        return float(estimate_effect(changed, "aipw", settings=SETTINGS)[0].estimate)

    settings = RefuterSettings(num_simulations=50, seed=2, refit_simulations=2,
                               bootstrap_noise=0)
    results = {r.name: r for r in run_refuters(frame, fit, None, settings, refit=refit)}
    assert {r.engine for r in results.values()} == {"scores"}
    assert results["placebo_treatment"].passed and abs(
        results["placebo_treatment"].new_effect) < 0.2
    assert results["data_subset"].passed and results["bootstrap"].passed
    # the bootstrap spread of the scores is the estimator's standard error
    assert np.std(results["bootstrap"].simulations) == pytest.approx(res.std_error, rel=0.35)
    assert results["random_common_cause"].simulations.size == 2
    assert "e2i_random_common_cause" in calls[0].common_causes
    assert len(calls) == 2 + 3  # 2 random-common-cause refits + 3 unobserved-grid refits
    ucc = results["unobserved_common_cause"]
    assert ucc.details["bound_low"] < res.estimate
