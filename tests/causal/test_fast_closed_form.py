"""The 100k-row fast paths of the closed-form estimators equal their reference paths: NumPy's
BLAS limited through OpenBLAS's own setter, the frame checks without per-column masks, the
difference in means from its score arrays, and the logistic fit's chord steps."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from threadpoolctl import threadpool_info

from e2i_pipelines.analytics.causal import weights as weights_module
from e2i_pipelines.analytics.causal.estimators import EffectData, difference_in_means
from e2i_pipelines.analytics.causal.settings import EstimatorSettings
from e2i_pipelines.analytics.causal.weights import fit_logistic
from e2i_pipelines.core.budget import _numpy_openblas_threads, single_threaded_blas
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.spec import CausalSpec, validate_frame


def _numpy_blas_threads() -> list[int]:
    import numpy

    root = numpy.__file__.rsplit("/", 2)[0]
    return [lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas" and lib["filepath"].startswith(root + "/numpy")]


def test_numpy_only_limit_sets_and_restores_numpy_blas_threads():
    if _numpy_openblas_threads() is None:
        pytest.skip("NumPy is not linked to OpenBLAS here (the threadpoolctl path is used)")
    before = _numpy_blas_threads()
    assert before, "threadpoolctl sees NumPy's OpenBLAS"
    with single_threaded_blas(numpy_only=True):
        assert _numpy_blas_threads() == [1] * len(before)
    assert _numpy_blas_threads() == before


def test_numpy_only_limit_restores_after_an_error():
    before = _numpy_blas_threads()
    with pytest.raises(RuntimeError), single_threaded_blas(numpy_only=True):
        raise RuntimeError("boom")
    assert _numpy_blas_threads() == before


def _frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=n), "t": rng.integers(0, 2, n), "y": rng.normal(size=n)})


SPEC = CausalSpec("t", "y", ["x"])


def test_nan_in_a_float_column_is_counted():
    df = _frame()
    df.loc[[3, 7, 11], "x"] = np.nan
    with pytest.raises(DataValidationError, match=r"column 'x' has 3 missing \(NaN\)"):
        validate_frame(df, SPEC)


def test_infinities_summing_to_nan_are_not_missing_values():
    df = _frame()
    df.loc[0, "x"], df.loc[1, "x"] = np.inf, -np.inf  # the sum is NaN; no value is missing
    validate_frame(df, SPEC)


def test_nullable_integer_missing_values_are_counted():
    df = _frame()
    df["x"] = pd.array([None, *range(len(df) - 1)], dtype="Int64")
    with pytest.raises(DataValidationError, match=r"column 'x' has 1 missing"):
        validate_frame(df, SPEC)


@pytest.mark.parametrize("values, shown", [([0, 1, 2], "['0', '1', '2']"),
                                           ([-1, 0, 1], "['-1', '0', '1']")])
def test_non_binary_integer_treatment_names_its_values(values, shown):
    df = _frame(300)
    df["t"] = np.resize(values, len(df))
    with pytest.raises(DataValidationError, match=re.escape(f"binary 0/1; found values {shown}")):
        validate_frame(df, SPEC)


@pytest.mark.parametrize("t", [np.ones(200, dtype=np.int64), np.zeros(200, dtype=bool)])
def test_single_valued_treatment_is_rejected(t):
    df = _frame()
    df["t"] = t
    with pytest.raises(DataValidationError, match="has a single value"):
        validate_frame(df, SPEC)


def _dim(t: np.ndarray, y: np.ndarray):
    data = EffectData(t=t, y=y, X=np.empty((len(y), 0)), names=[], tree_frame=None)
    return difference_in_means(data, EstimatorSettings())


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_difference_in_means_equals_per_arm_means_and_statsmodels_hc2(offset):
    rng = np.random.default_rng(4)
    n = 50_000
    t = rng.random(n) < 0.3
    y = 3 * rng.normal(size=n) + offset + 2 * t
    fit = _dim(t, y)
    assert fit.estimate == y[t].mean() - y[~t].mean()  # the same sums, bit for bit
    se = np.sqrt(y[t].var(ddof=1) / t.sum() + y[~t].var(ddof=1) / (~t).sum())
    assert fit.se == pytest.approx(se, rel=1e-12)
    ref = sm.OLS(y, sm.add_constant(t.astype(float))).fit(cov_type="HC2")
    assert fit.estimate == pytest.approx(ref.params[1], rel=1e-10, abs=1e-9)
    assert fit.se == pytest.approx(ref.bse[1], rel=1e-10)
    assert fit.scores.effect() == pytest.approx(fit.estimate, abs=1e-9)


def test_difference_in_means_with_a_one_row_arm_has_no_se():
    t = np.array([True] + [False] * 9)
    fit = _dim(t, np.arange(10.0))
    assert fit.estimate == 0.0 - 5.0 and np.isnan(fit.se)


def test_chord_steps_reach_the_newton_optimum(monkeypatch):
    """The warm start's scaled Hessian drives the full data's steps; the optimum, the
    propensities and the Hessian returned are those of plain Newton to 1e-10."""
    rng = np.random.default_rng(8)
    n = 20_000
    X = np.asfortranarray(rng.normal(size=(n, 6)))
    t = rng.random(n) < 1 / (1 + np.exp(-(0.8 * X[:, 0] - 0.5 * X[:, 1] + 0.2)))
    monkeypatch.setattr(weights_module, "WARM_START_ROWS", 2_000)
    warm = fit_logistic(X, t)
    monkeypatch.setattr(weights_module, "WARM_START_ROWS", n)  # no warm start
    monkeypatch.setattr(weights_module, "CHORD_STEP", 0.0)  # every step a Newton step
    plain = fit_logistic(X, t)
    np.testing.assert_allclose(warm.beta, plain.beta, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(warm.e, plain.e, atol=1e-12)
    np.testing.assert_allclose(warm.hessian, plain.hessian, rtol=1e-10)
