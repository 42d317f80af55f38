"""Fast TreeSHAP against shap.TreeExplainer: values, additivity, missing values, categoricals."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import shap

from e2i_pipelines.analytics.explain import model as treeshap_model
from e2i_pipelines.analytics.explain.model import flatten_booster
from e2i_pipelines.analytics.explain.treeshap import (
    TreeShapExplainer,
    additivity_error,
    check_method,
    model_matrix,
)

TOL = 1e-12  # shap's path-dependent values are LightGBM's float64 pred_contrib


def _reference(booster: lgb.Booster, data) -> tuple[np.ndarray, float]:
    explainer = shap.TreeExplainer(booster)
    return np.asarray(explainer.shap_values(data)), float(np.ravel(explainer.expected_value)[0])


@pytest.mark.parametrize("method", ["fast", "lightgbm"])
def test_matches_shap_tree_explainer_with_nans_and_categoricals(mixed_model, mixed_data, method):
    frame = mixed_data[mixed_model.feature_name()]
    ref, ref_base = _reference(mixed_model, frame)
    ours = TreeShapExplainer(mixed_model, method, n_threads=2)
    phi = ours.shap_values(frame)
    assert ours.method == method and ours.fallback_reason is None
    assert phi.shape == ref.shape
    assert np.max(np.abs(phi - ref)) <= TOL
    assert abs(ours.base_value - ref_base) <= TOL
    raw = mixed_model.predict(frame, raw_score=True)
    assert additivity_error(phi, ours.base_value, raw) <= TOL


def test_model_really_uses_categorical_and_missing_splits(mixed_model):
    """Guard: the fixture must exercise what the kernels claim to support."""
    flat = flatten_booster(mixed_model)
    assert (flat.node_kind == 1).any(), "no categorical split in the model"
    assert (flat.node_missing == 2).any(), "no NaN-aware split in the model"


def test_zero_as_missing_splits(zero_missing_model, mixed_data):
    frame = mixed_data[zero_missing_model.feature_name()]
    assert (flatten_booster(zero_missing_model).node_missing == 1).any()
    ref, _ = _reference(zero_missing_model, frame)
    phi = TreeShapExplainer(zero_missing_model, "fast").shap_values(frame)
    assert np.max(np.abs(phi - ref)) <= TOL


def test_splits_without_missing_type_read_nan_as_zero(mixed_data):
    """Features trained without missing values get missing type 'None' splits: LightGBM
    reads NaN (and zero) there as 0.0; so must the vectorised decisions."""
    numeric = mixed_data[[f"x{i}" for i in range(3, 8)]]
    y = numeric.sum(axis=1).to_numpy() + np.sin(3 * numeric["x4"].to_numpy())
    booster = lgb.train({"objective": "regression", "num_leaves": 31, "verbose": -1,
                         "seed": 1, "num_threads": 1}, lgb.Dataset(numeric, y),
                        num_boost_round=30)
    assert (flatten_booster(booster).node_missing == 0).all()
    X = numeric.to_numpy().copy()
    rng = np.random.default_rng(7)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[rng.random(X.shape) < 0.1] = 0.0
    ref = booster.predict(X, pred_contrib=True)
    phi = TreeShapExplainer(booster, "fast").shap_values(X)
    assert np.max(np.abs(phi - ref[:, :-1])) <= TOL


def test_unseen_and_negative_category_codes_follow_lightgbm(mixed_model, mixed_data):
    """Rows LightGBM sends right (NaN, category beyond the bitset) get the same SHAP."""
    X = model_matrix(mixed_model, mixed_data[mixed_model.feature_name()].head(200))
    col = mixed_model.feature_name().index("region")
    X[:50, col] = 40.0  # category never seen
    X[50:60, col] = np.nan
    X[60:70, col] = 2.7  # truncated to 2 like static_cast<int>
    ref = mixed_model.predict(X, pred_contrib=True)
    ours = TreeShapExplainer(mixed_model, "fast")
    assert np.max(np.abs(ours.shap_values(X) - ref[:, :-1])) <= TOL


def test_deep_paths_table_and_per_row_paths_agree(deep_model):
    booster, X = deep_model
    ref, _ = _reference(booster, X)
    flat = flatten_booster(booster)
    assert flat.leaf_depth.max() >= 8
    tabled = TreeShapExplainer(booster, "fast", n_threads=2)
    per_row = TreeShapExplainer(booster, "fast", table_depth=0)
    mixed = TreeShapExplainer(booster, "fast", table_depth=5)
    assert per_row.table_leaves == 0 and 0 < mixed.table_leaves < flat.n_leaves
    for explainer in (tabled, per_row, mixed):
        assert np.max(np.abs(explainer.shap_values(X) - ref)) <= TOL


def test_table_budget_lowers_table_depth(deep_model):
    booster, _ = deep_model
    full = TreeShapExplainer(booster, "fast")
    small = TreeShapExplainer(booster, "fast", table_bytes=64 * 1024)
    assert small.tables.nbytes <= 64 * 1024 < full.tables.nbytes
    assert small.table_depth < full.table_depth


def test_thread_count_and_row_order_do_not_change_values(mixed_model, mixed_data):
    X = model_matrix(mixed_model, mixed_data[mixed_model.feature_name()])
    one = TreeShapExplainer(mixed_model, "fast", n_threads=1).shap_values(X)
    two = TreeShapExplainer(mixed_model, "fast", n_threads=2).shap_values(X)
    perm = np.random.default_rng(0).permutation(len(X))
    shuffled = TreeShapExplainer(mixed_model, "fast").shap_values(X[perm])
    assert np.array_equal(one, two)
    assert np.array_equal(shuffled, one[perm])


def test_single_leaf_trees_go_to_the_base_value():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = X[:, 0] + rng.normal(size=500)
    booster = lgb.train({"objective": "regression", "verbose": -1, "min_data_in_leaf": 300},
                        lgb.Dataset(X, y), num_boost_round=5)
    dump = booster.dump_model()["tree_info"]
    assert any("leaf_value" in t["tree_structure"] for t in dump)
    ref, base = _reference(booster, X)
    ours = TreeShapExplainer(booster, "fast")
    assert np.max(np.abs(ours.shap_values(X) - ref)) <= TOL
    assert abs(ours.base_value - base) <= TOL
    assert additivity_error(ours.shap_values(X), ours.base_value,
                            booster.predict(X, raw_score=True)) <= TOL


def test_unsupported_structure_falls_back_to_lightgbm(mixed_model, mixed_data, monkeypatch):
    """Paths with more distinct features than the mask holds use LightGBM, saying why."""
    monkeypatch.setattr(treeshap_model, "MAX_PATH_FEATURES", 2)
    ours = TreeShapExplainer(mixed_model, "fast")
    assert ours.method == "lightgbm" and "more than 2 features" in ours.fallback_reason
    frame = mixed_data[mixed_model.feature_name()].head(300)
    ref, base = _reference(mixed_model, frame)
    assert np.max(np.abs(ours.shap_values(frame) - ref)) <= TOL
    assert abs(ours.base_value - base) <= TOL


def test_linear_trees_are_refused_with_a_reason():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 3))
    y = 2 * X[:, 0] + X[:, 1] + rng.normal(size=600)
    booster = lgb.train({"objective": "regression", "linear_tree": True, "verbose": -1},
                        lgb.Dataset(X, y), num_boost_round=3)
    with pytest.raises(ValueError, match="linear trees"):
        TreeShapExplainer(booster, "fast")


def test_bad_method_and_bad_input_are_named(mixed_model, mixed_data):
    with pytest.raises(ValueError, match="unknown SHAP method 'exactish'"):
        check_method("exactish")
    with pytest.raises(ValueError, match="unknown SHAP method"):
        TreeShapExplainer(mixed_model, "kernel")
    with pytest.raises(ValueError, match=r"no model feature\(s\) \['x0'\]"):
        TreeShapExplainer(mixed_model).shap_values(mixed_data.drop(columns=["x0"]))
    text = mixed_data[mixed_model.feature_name()].assign(tier=mixed_data["tier"].astype(str))
    with pytest.raises(ValueError, match="feature 'tier' has dtype"):
        TreeShapExplainer(mixed_model).shap_values(text)


def test_category_order_is_taken_from_the_model(mixed_model, mixed_data):
    """A frame whose categorical levels are ordered differently is recoded like LightGBM."""
    frame = mixed_data[mixed_model.feature_name()].copy()
    frame["tier"] = frame["tier"].cat.reorder_categories(["hi", "lo", "mid"])
    ref = mixed_model.predict(frame, pred_contrib=True)[:, :-1]
    phi = TreeShapExplainer(mixed_model).shap_values(frame)
    assert np.max(np.abs(phi - ref)) <= TOL
    assert isinstance(frame, pd.DataFrame)
