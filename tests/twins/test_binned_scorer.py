"""The scorer's binned tables (the twins' uplift path) against its walk and LightGBM."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.explain.kernels import _ZERO
from e2i_pipelines.analytics.explain.model import flatten_booster
from e2i_pipelines.analytics.explain.tree_scorer import _KIND, _STEPS, QuickScorer, _bin_grid
from e2i_pipelines.analytics.explain.treeshap import model_matrix


def _model(zero_as_missing: bool, num_leaves: int = 31) -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(11)
    n = 4_000
    frame = pd.DataFrame({"x": rng.normal(size=n), "z": rng.lognormal(size=n),
                          "seg": pd.Categorical(rng.choice(list("abcdef"), n)),
                          "treatment": (rng.random(n) < 0.5).astype(np.int8)})
    frame.loc[rng.random(n) < 0.1, "x"] = np.nan
    frame.loc[rng.random(n) < 0.2, "z"] = 0.0
    y = (np.nan_to_num(frame["x"].to_numpy(), nan=2.0) + np.log1p(frame["z"].to_numpy())
         + frame["treatment"] * (1 + frame["seg"].cat.codes) + rng.normal(scale=0.2, size=n))
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": num_leaves,
                         "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1.0,
                         "zero_as_missing": zero_as_missing},
                        lgb.Dataset(frame, y), num_boost_round=40)
    X = model_matrix(booster, frame)
    return booster, X


def _odd_values(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """Rows with thresholds, their neighbours, the zero band, infinities and NaN mixed in."""
    flat = flatten_booster(booster)
    thr = flat.node_threshold[flat.node_feature >= 0]
    odd = np.concatenate([thr, np.nextafter(thr, np.inf), np.nextafter(thr, -np.inf),
                          [0.0, -0.0, _ZERO, -_ZERO, np.inf, -np.inf, np.nan, 2.7, 40.0, 1e12]])
    rng = np.random.default_rng(2)
    X = np.concatenate([X, X])
    mask = rng.random(X.shape) < 0.3
    X[mask] = rng.choice(odd, int(mask.sum()))
    return X


@pytest.mark.parametrize(("zero_as_missing", "num_leaves", "wide_dtype"),
                         [(False, 31, np.uint32), (True, 31, np.uint32), (False, 48, np.uint64)])
def test_binned_tables_give_the_walks_bits(zero_as_missing, num_leaves, wide_dtype):
    """Wide tables (uint32 up to 32 leaves), per-tree tables and the walk: the same bits,
    in C or column-major input."""
    booster, X = _model(zero_as_missing, num_leaves)
    X = _odd_values(booster, X)
    flat = flatten_booster(booster)
    t = booster.feature_name().index("treatment")
    wide, binned = QuickScorer(flat), QuickScorer(flat, wide_bytes=0)
    walk = QuickScorer(flat, table_bytes=1)
    assert wide.bins.wide.dtype == wide_dtype and binned.bins.wide is None and walk.bins is None
    expected = walk.raw(X, n_threads=1)
    np.testing.assert_array_equal(binned.raw(X, n_threads=2), expected)
    np.testing.assert_array_equal(wide.raw(X, n_threads=2), expected)
    np.testing.assert_array_equal(wide.raw(np.asfortranarray(X), n_threads=2), expected)
    for scorer in (wide, binned):  # every numeric feature by binary search instead of its grid
        feat = scorer.bins.feat
        feat[:, _STEPS] = np.where(feat[:, _KIND] == 0, -1, feat[:, _STEPS])
        np.testing.assert_array_equal(scorer.raw(X, n_threads=2), expected)
    pinned = QuickScorer(flat, pinned_feature=t)
    assert pinned.bins.wide is not None
    walked = QuickScorer(flat, pinned_feature=t, table_bytes=1).difference(X, 1.0, 0.0)
    np.testing.assert_array_equal(pinned.difference(X, 1.0, 0.0, n_threads=2), walked)
    np.testing.assert_array_equal(QuickScorer(flat, pinned_feature=t, wide_bytes=0)
                                  .difference(X, 1.0, 0.0, n_threads=2), walked)
    ones, zeros = X.copy(), X.copy()
    ones[:, t], zeros[:, t] = 1.0, 0.0
    # LightGBM's predict reads |x| <= kZero as 0.0 and casts categorical -1 < x < 0 to 0:
    # rows with such values are compared with the walk above, not with predict
    keep = ~(np.abs(np.nan_to_num(X, nan=1.0)) <= _ZERO).any(axis=1) & ~(X < 0).any(axis=1)
    expected = booster.predict(ones[keep], raw_score=True) - booster.predict(zeros[keep],
                                                                             raw_score=True)
    np.testing.assert_allclose(pinned.difference(X[keep], 1.0, 0.0), expected, rtol=0,
                               atol=1e-9)


def test_bin_grid_reaches_every_bin():
    """Each value's bin is within ``steps`` of its cell's first bin; an outlier that would
    need too fine a grid switches the feature to the binary search (steps -1)."""
    rng = np.random.default_rng(0)
    bp = np.unique(rng.lognormal(size=300))
    lo, scale, first, steps = _bin_grid(bp)
    assert 0 < steps <= 8 and len(first) > 1
    x = np.concatenate([bp, np.nextafter(bp, 0), np.nextafter(bp, np.inf),
                        rng.lognormal(size=999)])
    cells = np.clip(((x - lo) * scale).astype(np.int64), 0, len(first) - 1)
    start, want = first[cells], np.searchsorted(bp, x)
    assert (start <= want).all() and (want - start <= steps).all()
    assert _bin_grid(np.append(bp, 1e12))[3] == -1
