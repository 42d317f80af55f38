"""The closed-form estimators and the prepared arrays equal their references: statsmodels for
OLS (with interactions, rank-deficient designs), HC2 differences in means, logistic
propensities and weighted means; DoWhy for linear regression; pandas' own encoding for the
frame."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from e2i_pipelines.analytics.causal import weights as weights_module
from e2i_pipelines.analytics.causal.estimate import (
    DowhyFit,
    _safe_names,
    estimate_effect,
    prepare_frame,
)
from e2i_pipelines.analytics.causal.ols import treatment_ols
from e2i_pipelines.analytics.causal.settings import EstimatorSettings
from e2i_pipelines.analytics.causal.weights import fit_logistic, target_weights
from e2i_pipelines.core.encoding import numeric_design
from e2i_pipelines.core.spec import CausalSpec

TOL = 1e-10


def _mixed(n: int, seed: int) -> pd.DataFrame:
    """Confounded data: numeric, boolean and string/integer-coded categorical covariates."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.2] + [0.0, 40.0, -1.0]
    region = rng.choice(["north", "south", "east"], size=n)
    tier = rng.integers(0, 4, size=n)
    flag = rng.random(n) < 0.3
    logit = 0.6 * x[:, 0] + 0.05 * (x[:, 1] - 40) - 0.5 * (region == "east") + 0.3 * flag
    t = rng.random(n) < 1 / (1 + np.exp(-logit))
    y = (1.5 * t + x[:, 0] + 0.2 * x[:, 1] + 2 * x[:, 2] + 0.7 * (region == "south")
         + 0.4 * tier + 0.8 * t * x[:, 0] + rng.normal(size=n))
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "region": region,
                         "tier": tier, "flag": flag, "t": t.astype(int), "y": y})


SPEC = CausalSpec("t", "y", ["x0", "x1", "x2", "region", "tier", "flag"],
                  effect_modifiers=["x0", "region"], categorical=["tier"])


@pytest.fixture(scope="module")
def mixed():
    df = _mixed(4000, seed=11)
    return df, prepare_frame(df, SPEC)


def _statsmodels_design(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[1, T, covariate design, T * M] built with pandas, y, and the modifier columns M."""
    covariates = ["x0", "x1", "x2", "region", "tier", "flag"]
    design = numeric_design(df, covariates, ["tier"])
    modifiers = [c for c in design.columns if c == "x0" or c.startswith("region_")]
    t = df["t"].to_numpy(float)
    M = design[modifiers].to_numpy(float)
    Z = np.column_stack([np.ones(len(df)), t, design.to_numpy(float), M * t[:, None]])
    return Z, df["y"].to_numpy(float), M


def test_frame_matches_pandas_encoding_and_shares_one_matrix(mixed):
    df, frame = mixed
    design = numeric_design(df, ["x0", "x1", "x2", "region", "tier", "flag"], ["tier"])
    names = _safe_names(list(design.columns), set())
    assert frame.common_causes == [names[c] for c in design.columns]
    np.testing.assert_array_equal(frame.data[frame.common_causes].to_numpy(),
                                  design.to_numpy(float))
    data = frame.effect_data()
    assert np.shares_memory(data.X, frame.data[frame.common_causes[0]].to_numpy())
    assert data.X.flags.f_contiguous and data.X.dtype == np.float64
    np.testing.assert_array_equal(data.t, df["t"].to_numpy().astype(bool))
    np.testing.assert_array_equal(data.y, df["y"].to_numpy(float))
    tree = frame.tree_frame
    assert list(tree.columns) == ["x0", "x1", "x2", "region", "tier", "flag"]
    assert isinstance(tree["region"].dtype, pd.CategoricalDtype)
    assert isinstance(tree["tier"].dtype, pd.CategoricalDtype)
    np.testing.assert_array_equal(tree["flag"].to_numpy(), df["flag"].to_numpy(float))
    np.testing.assert_array_equal(tree["region"].astype(str).to_numpy(), df["region"].to_numpy())


def test_changed_frame_rebuilds_its_arrays(mixed):
    from dataclasses import replace

    _, frame = mixed
    data = frame.data.copy()
    data[frame.outcome] = data[frame.outcome] + 1.0
    changed = replace(frame, data=data)
    np.testing.assert_allclose(changed.effect_data().y, frame.effect_data().y + 1.0)


def test_constant_design_column_is_rejected():
    df = _mixed(500, seed=2)
    df["x2"] = 3.0
    with pytest.raises(ValueError, match=r"design column\(s\) \['x2'\] are constant"):
        prepare_frame(df, SPEC)


@pytest.mark.parametrize("target", ["ate", "att", "atc"])
def test_linear_regression_equals_statsmodels_ols(target):
    df = _mixed(4000, seed=11)
    spec = CausalSpec(SPEC.treatment, SPEC.outcome, SPEC.common_causes,
                      effect_modifiers=SPEC.effect_modifiers, categorical=SPEC.categorical,
                      target=target)
    frame = prepare_frame(df, spec)
    result, fit, _ = estimate_effect(frame, "linear_regression")
    Z, y, M = _statsmodels_design(df)
    ols = sm.OLS(y, Z).fit()
    t = df["t"].to_numpy(bool)
    rows = {"ate": np.ones(len(df), bool), "att": t, "atc": ~t}[target]
    mask = df["region"].to_numpy() == "north"
    for got, subset in ((result.estimate, rows), (fit.effect_on(mask)[0], rows & mask)):
        c = np.zeros(Z.shape[1])
        c[1] = 1.0
        c[Z.shape[1] - M.shape[1]:] = M[subset].mean(axis=0)
        assert got == pytest.approx(float(c @ ols.params), abs=TOL, rel=TOL)
        se = float(np.sqrt(c @ ols.cov_params() @ c))
        assert (result.std_error if subset is rows else fit.effect_on(mask)[1]) == \
            pytest.approx(se, rel=TOL)
    assert result.details["dof"] == ols.df_resid


def test_linear_regression_equals_dowhy_built_only_on_demand(mixed):
    _, frame = mixed
    result, _, fitted = estimate_effect(frame, "linear_regression")
    assert isinstance(fitted, DowhyFit) and fitted._fit is None  # nothing built yet
    _, _, estimate = fitted
    assert float(estimate.value) == pytest.approx(result.estimate, abs=TOL, rel=TOL)


def test_estimate_does_not_import_dowhy():
    import subprocess

    code = ("import sys; import pandas as pd, numpy as np\n"
            "from e2i_pipelines.analytics.causal.estimate import estimate_effect, prepare_frame\n"
            "from e2i_pipelines.core.spec import CausalSpec\n"
            "rng = np.random.default_rng(0); x = rng.normal(size=500)\n"
            "df = pd.DataFrame({'x': x, 't': (rng.random(500) < 0.5).astype(int), 'y': x})\n"
            "frame = prepare_frame(df, CausalSpec('t', 'y', ['x']))\n"
            "for m in ('linear_regression', 'propensity_score_weighting', "
            "'difference_in_means'):\n"
            "    estimate_effect(frame, m)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in "
            "('dowhy', 'statsmodels', 'sklearn')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_rank_deficient_design_matches_statsmodels_pinv():
    rng = np.random.default_rng(5)
    n = 3000
    X = rng.normal(size=(n, 3))
    X = np.column_stack([X, X[:, 0] + X[:, 1]])  # exactly collinear
    t = rng.random(n) < 0.5
    y = 2 * t + X @ [1.0, -1.0, 0.5, 0.0] + rng.normal(size=n)
    ours = treatment_ols(t, y, np.asfortranarray(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' SingularMatrixWarning: expected here
        ref = sm.OLS(y, np.column_stack([np.ones(n), t, X])).fit()
    assert ours.dof == ref.df_resid == n - 5
    assert ours.beta[1] == pytest.approx(ref.params[1], abs=TOL)
    assert np.sqrt(ours.cov[1, 1]) == pytest.approx(ref.bse[1], rel=1e-9)
    np.testing.assert_allclose(np.column_stack([np.ones(n), t, X]) @ ours.beta,
                               ref.fittedvalues, atol=1e-9)


def test_difference_in_means_equals_statsmodels_hc2(mixed):
    df, frame = mixed
    result, _, _ = estimate_effect(frame, "difference_in_means")
    ref = sm.OLS(df["y"].to_numpy(float), sm.add_constant(df["t"].to_numpy(float))).fit(
        cov_type="HC2")
    assert result.estimate == pytest.approx(ref.params[1], abs=TOL, rel=TOL)
    assert result.std_error == pytest.approx(ref.bse[1], rel=TOL)


def _statsmodels_logit(X: np.ndarray, t: np.ndarray):
    return sm.Logit(t.astype(float), sm.add_constant(X)).fit(
        method="newton", tol=1e-14, maxiter=100, disp=0)


@pytest.mark.parametrize("warm_rows", [0, 400])
def test_logistic_fit_equals_statsmodels(monkeypatch, warm_rows):
    """Same MLE with and without the warm start on every k-th row (forced at 4,000 rows)."""
    if warm_rows:
        monkeypatch.setattr(weights_module, "WARM_START_ROWS", warm_rows)
    df = _mixed(4000, seed=3)
    X = df[["x0", "x1", "x2"]].to_numpy(float)
    t = df["t"].to_numpy(bool)
    fit = fit_logistic(np.asfortranarray(X), t)
    ref = _statsmodels_logit(X, t)
    np.testing.assert_allclose(fit.beta, ref.params, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fit.e, ref.predict(), atol=1e-10)
    Xi = sm.add_constant(X)
    np.testing.assert_allclose(fit.hessian, -ref.model.hessian(ref.params), rtol=1e-8)
    assert np.abs(Xi.T @ (t - fit.e)).max() < 1e-8  # the score equations hold


@pytest.mark.parametrize("target", ["ate", "att", "atc"])
def test_weighting_equals_statsmodels_glm_with_weights(mixed, target):
    df, frame = mixed
    frame = prepare_frame(df, CausalSpec(SPEC.treatment, SPEC.outcome, SPEC.common_causes,
                                         categorical=SPEC.categorical, target=target))
    result, fit, _ = estimate_effect(frame, "propensity_score_weighting")
    X = frame.effect_data().X
    t = df["t"].to_numpy(bool)
    e = _statsmodels_logit(X, t).predict()
    np.testing.assert_allclose(fit.propensity, e, atol=1e-10)
    w = target_weights(e, t, target)
    glm = sm.GLM(df["y"].to_numpy(float), sm.add_constant(t.astype(float)),
                 family=sm.families.Gaussian(), var_weights=w).fit()
    assert result.estimate == pytest.approx(glm.params[1], abs=TOL, rel=TOL)


def test_weighting_trim_equals_weighted_means_on_kept_rows(mixed):
    df, frame = mixed
    settings = EstimatorSettings(trim=0.2)
    result, fit, _ = estimate_effect(frame, "propensity_score_weighting", settings=settings)
    e, t = fit.propensity, df["t"].to_numpy(bool)
    keep = (e >= 0.2) & (e <= 0.8)
    assert 0 < result.details["n_trimmed"] == int((~keep).sum())
    w = target_weights(e, t, "ate")[keep]
    glm = sm.WLS(df["y"].to_numpy(float)[keep], sm.add_constant(t[keep].astype(float)),
                 weights=w).fit()
    assert result.estimate == pytest.approx(glm.params[1], abs=TOL, rel=TOL)
