"""The bitvector scorer against LightGBM's own predict on every split kind it handles."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.explain.model import UnsupportedModelError, flatten_booster
from e2i_pipelines.analytics.explain.tree_scorer import QuickScorer
from e2i_pipelines.analytics.explain.treeshap import TreeShapExplainer, model_matrix

TOL = 1e-9


def _raw(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    flat = flatten_booster(booster)
    return QuickScorer(flat).raw(X, n_threads=2) + flat.constant_value


def test_raw_matches_lightgbm_with_nans_and_categoricals(mixed_model, mixed_data):
    X = model_matrix(mixed_model, mixed_data[mixed_model.feature_name()])
    flat = flatten_booster(mixed_model)
    assert (flat.node_kind == 1).any() and (flat.node_missing == 2).any()
    np.testing.assert_allclose(_raw(mixed_model, X), mixed_model.predict(X, raw_score=True),
                               rtol=0, atol=TOL)


def test_odd_category_codes_follow_lightgbm(mixed_model, mixed_data):
    """Unseen, negative, fractional, huge and NaN codes take LightGBM's branch."""
    X = model_matrix(mixed_model, mixed_data[mixed_model.feature_name()])[:400].copy()
    j = mixed_model.feature_name().index("region")
    X[:, j] = np.resize([-1.0, 2.7, 11.0, 12.0, 40.0, 1e12, np.nan, 0.0], len(X))
    np.testing.assert_allclose(_raw(mixed_model, X), mixed_model.predict(X, raw_score=True),
                               rtol=0, atol=TOL)


def test_zero_as_missing_splits(zero_missing_model, mixed_data):
    X = mixed_data[[f"x{i}" for i in range(8)]].to_numpy(dtype=np.float64)
    assert (flatten_booster(zero_missing_model).node_missing == 1).any()
    np.testing.assert_allclose(_raw(zero_missing_model, X),
                               zero_missing_model.predict(X, raw_score=True), rtol=0, atol=TOL)


def test_pinned_difference_is_the_two_arm_prediction(mixed_model, mixed_data):
    X = model_matrix(mixed_model, mixed_data[mixed_model.feature_name()])
    t = mixed_model.feature_name().index("treatment")
    scorer = QuickScorer(flatten_booster(mixed_model), pinned_feature=t)
    ones, zeros = X.copy(), X.copy()
    ones[:, t], zeros[:, t] = 1.0, 0.0
    expected = (mixed_model.predict(ones, raw_score=True)
                - mixed_model.predict(zeros, raw_score=True))
    assert np.abs(expected).max() > 0.1  # the model really uses the treatment
    np.testing.assert_allclose(scorer.difference(X, 1.0, 0.0), expected, rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="unpinned"):
        scorer.raw(X)


def test_constant_trees_and_empty_input():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    booster = lgb.train({"objective": "regression", "verbose": -1, "min_data_in_leaf": 300},
                        lgb.Dataset(X, X[:, 0] + rng.normal(size=500)), num_boost_round=5)
    assert flatten_booster(booster).constant_value != 0.0
    np.testing.assert_allclose(_raw(booster, X), booster.predict(X, raw_score=True),
                               rtol=0, atol=TOL)
    assert _raw(booster, X[:0]).shape == (0,)


def test_more_than_64_leaves_is_refused_and_shap_falls_back():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(5_000, 6))
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 100,
                         "min_data_in_leaf": 5},
                        lgb.Dataset(pd.DataFrame(X), X.sum(axis=1) + np.sin(5 * X[:, 0])),
                        num_boost_round=3)
    with pytest.raises(UnsupportedModelError, match="64"):
        QuickScorer(flatten_booster(booster))
    explainer = TreeShapExplainer(booster, "fast")
    assert explainer.scorer is None  # raw scores then come from LightGBM itself
    np.testing.assert_allclose(explainer.raw_score(X), booster.predict(X, raw_score=True))


@pytest.mark.parametrize("table_bytes", [1, 20_000])
def test_small_table_budget_widens_checkpoints_not_results(mixed_model, mixed_data,
                                                          table_bytes):
    X = model_matrix(mixed_model, mixed_data[mixed_model.feature_name()])
    scorer = QuickScorer(flatten_booster(mixed_model), table_bytes=table_bytes)
    assert scorer.stride > 16
    assert scorer.cp_table.nbytes <= max(table_bytes, len(scorer.roots) * 8)
    np.testing.assert_allclose(scorer.raw(X), mixed_model.predict(X, raw_score=True),
                               rtol=0, atol=TOL)
