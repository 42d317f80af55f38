"""Interventional TreeSHAP: exact against its definition (brute force over feature subsets
with LightGBM's own predictions) and against shap's interventional TreeExplainer."""

import itertools
import math
import re

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shap

from e2i_pipelines.analytics.explain.background import sample_background
from e2i_pipelines.analytics.explain.stream import explain_parquet
from e2i_pipelines.analytics.explain.treeshap import TreeShapExplainer, model_matrix

EXACT = 1e-12
# shap's interventional kernel (tree_shap_indep) keeps thresholds, leaf values and partial
# sums in float32, so it agrees with exact float64 values only to ~1e-7 relative.
SHAP_TOL = 1e-5


def _shap_interventional(booster, background, rows) -> tuple[np.ndarray, float]:
    """shap with *all* background rows (its default masker keeps only 100)."""
    masker = shap.maskers.Independent(background, max_samples=len(background))
    explainer = shap.TreeExplainer(booster, data=masker, feature_perturbation="interventional")
    return np.asarray(explainer.shap_values(rows)), float(explainer.expected_value)


def _brute_force(booster, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Interventional SHAP by definition: mean over background rows z of the Shapley values
    of S -> f(x_S, z_rest), every subset evaluated by LightGBM."""
    m = len(x)
    masks = np.array(list(itertools.product([False, True], repeat=m)))
    index = {tuple(s): i for i, s in enumerate(masks)}
    weight = [math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
              for k in range(m)]
    phi = np.zeros(m)
    for z in background:
        values = booster.predict(np.where(masks, x, z), raw_score=True)
        for i, s in enumerate(masks):
            for k in np.flatnonzero(~s):
                with_k = s.copy()
                with_k[k] = True
                phi[k] += weight[int(s.sum())] * (values[index[tuple(with_k)]] - values[i])
    return phi / len(background)


def _numeric_model(objective: str = "regression") -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(8)
    X = rng.normal(size=(3_000, 6))
    X[rng.random(X.shape) < 0.08] = np.nan
    clean = np.nan_to_num(X, nan=0.7)
    y = 2 * clean[:, 0] + np.sin(3 * clean[:, 1]) + clean[:, 2] * clean[:, 3] + clean[:, 4]
    if objective == "binary":
        y = (y + rng.normal(size=len(y)) > 0).astype(int)
    booster = lgb.train({"objective": objective, "num_leaves": 15, "verbose": -1, "seed": 2,
                         "num_threads": 1}, lgb.Dataset(X, y), num_boost_round=40)
    return booster, X


@pytest.mark.parametrize("objective", ["regression", "binary"])
def test_matches_shap_with_nans(objective):
    booster, X = _numeric_model(objective)
    background, rows = X[:80], X[80:480]
    ref, ref_base = _shap_interventional(booster, background, rows)
    ours = TreeShapExplainer(booster, feature_perturbation="interventional",
                             background=background, n_threads=2)
    phi = ours.shap_values(rows)
    assert np.isnan(rows).any()
    assert np.max(np.abs(phi - ref)) <= SHAP_TOL
    assert abs(ours.base_value - ref_base) <= 1e-12
    raw = booster.predict(rows, raw_score=True)
    assert np.max(np.abs(phi.sum(axis=1) + ours.base_value - raw)) <= 1e-12
    assert ours.base_value == pytest.approx(booster.predict(background, raw_score=True).mean(),
                                            abs=1e-12)


def _float32_exact(booster: lgb.Booster) -> lgb.Booster:
    """The booster with thresholds on halves and leaf values on eighths: numbers float32
    holds exactly, so shap's float32 kernel rounds nothing on depth-2 trees (Shapley
    weights 1 and 1/2)."""
    def rounded(step: float):
        return lambda m: m.group(1) + " ".join(repr(round(float(v) / step) * step)
                                               for v in m.group(2).split())

    text = re.sub(r"^(threshold=)(.*)$", rounded(0.5), booster.model_to_string(), flags=re.M)
    text = re.sub(r"^(leaf_value=)(.*)$", rounded(0.125), text, flags=re.M)
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)  # sizes changed: parse in order
    return lgb.Booster(model_str=text)


@pytest.mark.parametrize("objective", ["regression", "binary"])
def test_equals_shap_to_1e9_where_its_float32_rounds_nothing(objective):
    """On a model whose numbers float32 holds exactly, ours equals shap's interventional
    values within 1e-9 (NaNs included); on the model as trained they differ by shap's
    float32 rounding only (ours equals the definition to 1e-12, tested above)."""
    rng = np.random.default_rng(4)
    X = rng.integers(0, 10, size=(3_000, 6)).astype(float)
    X[rng.random(X.shape) < 0.1] = np.nan
    c = np.nan_to_num(X, nan=3.0)
    y = c[:, 0] * c[:, 1] / 10 + np.where(c[:, 2] > 4, 2.0, -1.0) + c[:, 3] + rng.normal(size=len(c))
    if objective == "binary":
        y = (y > np.median(y)).astype(int)
    trained = lgb.train({"objective": objective, "max_depth": 2, "num_leaves": 4, "seed": 1,
                         "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), num_boost_round=40)
    background, rows = X[:8], X[100:400]
    diffs = []
    for booster in (_float32_exact(trained), trained):
        ref, ref_base = _shap_interventional(booster, background, rows)
        ours = TreeShapExplainer(booster, feature_perturbation="interventional",
                                 background=background)
        phi = ours.shap_values(rows)
        diffs.append(np.max(np.abs(phi - ref)))
        assert abs(ours.base_value - ref_base) <= 1e-12
        raw = booster.predict(rows, raw_score=True)
        assert np.max(np.abs(phi.sum(axis=1) + ours.base_value - raw)) <= 1e-12
    assert diffs[0] <= 1e-9 < diffs[1] <= SHAP_TOL


def test_exact_by_definition_with_nans_and_categoricals(mixed_model, mixed_data):
    """Categorical and NaN splits follow LightGBM (shap's interventional kernel cannot
    parse LightGBM category splits, so the reference is the definition itself)."""
    X = model_matrix(mixed_model, mixed_data[mixed_model.feature_name()])
    background = X[:12]
    rows = np.vstack([X[100:104], X[np.isnan(X).any(axis=1)][:2]])
    ours = TreeShapExplainer(mixed_model, feature_perturbation="interventional",
                             background=background)
    phi = ours.shap_values(rows)
    for r, x in enumerate(rows):
        assert np.max(np.abs(phi[r] - _brute_force(mixed_model, x, background))) <= EXACT
    raw = mixed_model.predict(rows, raw_score=True)
    assert np.max(np.abs(phi.sum(axis=1) + ours.base_value - raw)) <= 1e-12


def test_deep_trees_tables_and_per_row_fallback_agree(deep_model):
    booster, X = deep_model
    background, rows = X[:60], X[60:360]
    ref, _ = _shap_interventional(booster, background, rows)
    tabled = TreeShapExplainer(booster, feature_perturbation="interventional",
                               background=background, n_threads=2)
    mixed = TreeShapExplainer(booster, feature_perturbation="interventional",
                              background=background, table_depth=5)
    per_row = TreeShapExplainer(booster, feature_perturbation="interventional",
                                background=background, table_depth=0)
    assert per_row.table_leaves == 0 < mixed.table_leaves < tabled.table_leaves
    one = tabled.shap_values(rows)
    assert np.max(np.abs(one - ref)) <= SHAP_TOL
    for other in (mixed, per_row):
        assert np.max(np.abs(other.shap_values(rows) - one)) <= EXACT


def test_chunked_equals_one_shot(mixed_model, mixed_data, tmp_path):
    frame = mixed_data.assign(row_id=np.arange(len(mixed_data)))
    frame.to_parquet(tmp_path / "data.parquet", row_group_size=800)
    names = mixed_model.feature_name()
    background = sample_background(tmp_path / "data.parquet", names, 150, seed=3)
    explainer = TreeShapExplainer(mixed_model, feature_perturbation="interventional",
                                  background=background)
    result = explain_parquet(explainer, tmp_path / "data.parquet", tmp_path / "out.parquet",
                             "row_id", lambda df: df[names], chunk_rows=700, sample_rows=100)
    out = pq.read_table(tmp_path / "out.parquet")
    np.testing.assert_array_equal(out.select(names).to_pandas().to_numpy(),
                                  explainer.shap_values(frame[names]))
    assert result.feature_perturbation == "interventional"
    assert result.max_additivity_error <= 1e-9
    assert out.schema.metadata[b"e2i.background_rows"] == b"150"


def test_background_sampling_is_seeded_and_follows_the_source(mixed_data, tmp_path):
    path = tmp_path / "data.parquet"
    mixed_data.assign(row_id=np.arange(len(mixed_data))).to_parquet(path, row_group_size=700)
    cols = ["row_id", "treatment"]
    one = sample_background(path, cols, 300, seed=4)
    assert one.equals(sample_background(path, cols, 300, seed=4))
    assert not one.equals(sample_background(path, cols, 300, seed=5))
    assert one["row_id"].is_unique and one["treatment"].mean() == pytest.approx(0.4, abs=0.1)
    control = sample_background(path, cols, 300, seed=4, source="control",
                                treatment="treatment")
    assert (control["treatment"] == 0).all() and control["row_id"].is_unique
    n_control = int((mixed_data["treatment"] == 0).sum())
    with pytest.raises(ValueError, match=f"only {n_control:,} control-arm rows"):
        sample_background(path, cols, n_control + 1, seed=0, source="control",
                          treatment="treatment")
    with pytest.raises(ValueError, match="background_rows=0"):
        sample_background(path, cols, 0, seed=0)
    with pytest.raises(ValueError, match="unknown background source 'treated'"):
        sample_background(path, cols, 10, seed=0, source="treated")


def test_bad_perturbation_and_missing_background_are_named(mixed_model):
    with pytest.raises(ValueError, match="unknown feature_perturbation 'observational'"):
        TreeShapExplainer(mixed_model, feature_perturbation="observational")
    with pytest.raises(ValueError, match="needs background rows"):
        TreeShapExplainer(mixed_model, feature_perturbation="interventional")
    with pytest.raises(ValueError, match="needs method 'fast'"):
        TreeShapExplainer(mixed_model, "lightgbm", feature_perturbation="interventional",
                          background=np.zeros((3, 11)))
    assert isinstance(pd.DataFrame(), pd.DataFrame)


def test_fan_out_kernel_ships_the_background(mixed_model, mixed_data):
    """The picklable per-chunk kernel (Ray fan-out) rebuilds the same interventional
    explainer where it runs."""
    import pickle

    from e2i_pipelines.analytics.explain.stream import ShapChunk, ShapKernel, explain_chunk

    X = model_matrix(mixed_model, mixed_data[mixed_model.feature_name()])
    local = TreeShapExplainer(mixed_model, feature_perturbation="interventional",
                              background=X[:90])
    shipped = pickle.loads(pickle.dumps(ShapKernel(local)))
    assert shipped.explainer.feature_perturbation == "interventional"
    assert shipped.explainer.base_value == local.base_value
    phi, error = explain_chunk(shipped, ShapChunk(np.arange(300), X[:300]))
    np.testing.assert_array_equal(phi, local.shap_values(X[:300]))
    assert error <= 1e-12
