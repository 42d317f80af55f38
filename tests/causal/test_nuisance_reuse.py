"""LightGBM nuisances on features binned once: the fast paths equal the reference paths."""

from __future__ import annotations

from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.causal import nuisance
from e2i_pipelines.analytics.causal.estimate import estimate_effect, prepare_frame
from e2i_pipelines.analytics.causal.estimators import crossfit_folds, dml
from e2i_pipelines.analytics.causal.refute_scores import RANDOM_COLUMN, with_random_common_cause
from e2i_pipelines.analytics.causal.settings import EstimatorSettings
from e2i_pipelines.core.spec import CausalSpec
from tests.causal import generated as gen

PARAMS = nuisance.lgb_params(trees=30, n_jobs=1, seed=3)


def _covariates(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Numeric covariates, one categorical with a missing level; binary t, continuous y."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    region = pd.Categorical(rng.choice(["a", "b", "c", "d"], n))
    region[rng.random(n) < 0.02] = np.nan
    frame = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "region": region})
    shift = pd.Series(region).map({"a": -1.0, "b": 0.5, "c": 1.0, "d": 0.0}).fillna(0).to_numpy()
    t = rng.random(n) < 1 / (1 + np.exp(-(np.sin(2 * x[:, 0]) + shift)))
    y = 2 * t + x[:, 1] ** 2 + shift + rng.normal(size=n)
    return frame, t, y


def _booster(params: dict, ds: lgb.Dataset, objective: str) -> lgb.Booster:
    return lgb.train({**params, "objective": objective}, ds)


def test_fold_subsets_predict_bit_identically_to_per_fold_datasets():
    frame, t, y = _covariates(6000, seed=1)
    full = nuisance.bin_frame(frame, PARAMS)
    bins = nuisance.Binned(full, list(frame.columns), PARAMS)
    fold = crossfit_folds(t, 3, seed=2)
    X = nuisance.tree_matrix(frame)
    cats = nuisance.categorical_positions(frame)
    assert cats == [3]
    for k in range(3):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        for label, objective in ((t[train], "binary"), (y[train], "regression")):
            fast = _booster(PARAMS, bins.labelled(train, label), objective)
            # reference: a Dataset of the fold's raw rows, binned with the same bin edges
            ref_ds = lgb.Dataset(X[train], label=label.astype(float), reference=full,
                                 categorical_feature=cats,
                                 params=nuisance._dataset_params(PARAMS))
            ref = _booster(PARAMS, ref_ds, objective)
            p_fast, p_ref = fast.predict(X[test]), ref.predict(X[test])
            assert np.array_equal(p_fast, p_ref)
            assert p_fast.std() > 0  # the models learned something
            assert fast.model_to_string() == ref.model_to_string()


def test_subset_labels_are_the_ones_set_not_the_parents():
    frame, t, y = _covariates(3000, seed=4)
    bins = nuisance.Binned(nuisance.bin_frame(frame, PARAMS), list(frame.columns), PARAMS)
    rows = np.arange(0, 3000, 2)
    part = bins.labelled(rows, y[rows])
    assert np.array_equal(part.get_field("label"), y[rows].astype(np.float32))


def test_added_column_equals_binning_the_extended_frame():
    frame, t, y = _covariates(5000, seed=5)
    u = np.random.default_rng(9).standard_normal(len(frame))
    wide = frame.copy()
    wide[RANDOM_COLUMN] = u
    nuisance.extend(wide, frame, [RANDOM_COLUMN])
    fast = nuisance.binned(wide, PARAMS)
    assert fast.dataset.num_feature() == 5
    scratch = nuisance.Binned(nuisance.bin_frame(wide, PARAMS), list(wide.columns), PARAMS)
    X = nuisance.tree_matrix(wide)
    rows = np.arange(4000)
    a = _booster(PARAMS, fast.labelled(rows, y[rows]), "regression").predict(X[4000:])
    b = _booster(PARAMS, scratch.labelled(rows, y[rows]), "regression").predict(X[4000:])
    assert np.array_equal(a, b)
    # the base frame's cached bins were copied, not changed
    assert nuisance.binned(frame, PARAMS).dataset.num_feature() == 4


def test_cache_is_per_frame_and_refits_reuse_it():
    df = gen.nonlinear_confounding(4000, seed=6)
    frame = prepare_frame(df, CausalSpec("t", "y", ["x0", "x1", "x2", "x3"]))
    settings = EstimatorSettings(n_jobs=1, folds=3, nuisance_trees=40, seed=1)
    params = nuisance.lgb_params(40, 1, 1)
    first = estimate_effect(frame, "aipw", settings=settings)[0].estimate
    cached = nuisance.binned(frame.tree_frame, params)
    # the unobserved-confounder refit changes treatment and outcome only: same bins
    changed = replace(frame, data=frame.data.copy())
    assert nuisance.binned(changed.tree_frame, params) is cached
    again = estimate_effect(changed, "aipw", settings=settings)[0].estimate
    assert again == first
    # cached bins give the same estimate as bins built afresh for a copy of the frame
    fresh = replace(frame, tree_frame=frame.tree_frame.copy())
    assert nuisance.binned(fresh.tree_frame, params) is not cached
    assert estimate_effect(fresh, "aipw", settings=settings)[0].estimate == first
    # the random common cause: bins of the wider frame, the base's bins untouched
    wider = with_random_common_cause(frame, np.random.default_rng(0))
    estimate_effect(wider, "aipw", settings=settings)
    assert nuisance.binned(wider.tree_frame, params).dataset.num_feature() == 5
    assert cached.dataset.num_feature() == 4


def test_cache_forgets_a_frame_when_it_is_freed():
    frame, _, _ = _covariates(500, seed=7)
    nuisance.binned(frame, PARAMS)
    key = id(frame)
    assert any(k[0] == key for k in nuisance._CACHE)
    del frame
    assert not any(k[0] == key for k in nuisance._CACHE)


def test_dml_linear_equals_doubleml_plr():
    """The partialling-out score, its SE and the folds equal DoubleMLPLR's."""
    import doubleml
    from sklearn.linear_model import LinearRegression, LogisticRegression

    df = gen.nonlinear_confounding(3000, seed=8)
    frame = prepare_frame(df, CausalSpec("t", "y", ["x0", "x1", "x2", "x3"]))
    data = frame.effect_data()
    settings = EstimatorSettings(folds=4, nuisance="linear", seed=2)
    ours = dml(data, settings)
    fold = crossfit_folds(data.t, 4, 2)
    plr = doubleml.DoubleMLPLR(
        doubleml.DoubleMLData.from_arrays(x=data.X, y=data.y, d=data.t.astype(float)),
        ml_l=LinearRegression(), ml_m=LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000),
        n_folds=4, score="partialling out", draw_sample_splitting=False)
    plr.set_sample_splitting([[(np.flatnonzero(fold != k), np.flatnonzero(fold == k))
                               for k in range(4)]])
    plr.fit()
    assert ours.estimate == pytest.approx(float(plr.coef[0]), abs=1e-6)
    assert ours.se == pytest.approx(float(plr.se[0]), rel=1e-5)


def test_dml_lightgbm_within_two_se_of_doubleml_plr():
    import doubleml

    df = gen.nonlinear_confounding(6000, seed=9)
    frame = prepare_frame(df, CausalSpec("t", "y", ["x0", "x1", "x2", "x3"]))
    data = frame.effect_data()
    settings = EstimatorSettings(folds=3, nuisance_trees=100, seed=1, n_jobs=1)
    ours = dml(data, settings)
    params = {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 31,
              "min_child_samples": 50, "n_jobs": 1, "random_state": 1, "verbose": -1}
    fold = crossfit_folds(data.t, 3, 1)
    plr = doubleml.DoubleMLPLR(
        doubleml.DoubleMLData.from_arrays(x=data.X, y=data.y, d=data.t.astype(float)),
        ml_l=lgb.LGBMRegressor(**params), ml_m=lgb.LGBMClassifier(**params), n_folds=3,
        score="partialling out", draw_sample_splitting=False)
    plr.set_sample_splitting([[(np.flatnonzero(fold != k), np.flatnonzero(fold == k))
                               for k in range(3)]])
    plr.fit()
    assert abs(ours.estimate - float(plr.coef[0])) < 2 * float(plr.se[0])
    assert ours.se == pytest.approx(float(plr.se[0]), rel=0.2)


def test_batched_aipw_equals_per_fold_reference_models():
    """Every fold's models trained as one pooled batch (2 at a time) give bit-identically the
    estimate of models trained fold by fold on Datasets of the fold's raw rows."""
    from e2i_pipelines.analytics.causal.estimators import aipw, aipw_scores

    df = gen.nonlinear_confounding(5000, seed=12)
    frame = prepare_frame(df, CausalSpec("t", "y", ["x0", "x1", "x2", "x3"]))
    data = frame.effect_data()
    settings = EstimatorSettings(folds=3, nuisance_trees=30, seed=4, n_jobs=2)
    ours = aipw(data, settings)
    params = nuisance.lgb_params(30, 1, 4)
    X = nuisance.tree_matrix(data.tree_frame)
    full = nuisance.bin_frame(data.tree_frame, params)
    fold = crossfit_folds(data.t, 3, 4)
    preds = [np.empty(len(data.y)) for _ in range(3)]
    for k in range(3):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        tr1, tr0 = train[data.t[train]], train[~data.t[train]]
        for out, rows, label, objective in ((preds[0], train, data.t, "binary"),
                                            (preds[1], tr1, data.y, "regression"),
                                            (preds[2], tr0, data.y, "regression")):
            ds = lgb.Dataset(X[rows], label=label[rows].astype(float), reference=full,
                             params=nuisance._dataset_params(params))
            out[test] = _booster(params, ds, objective).predict(X[test])
    e = np.clip(preds[0], settings.propensity_clip, 1 - settings.propensity_clip)
    ref = aipw_scores(data.t, data.y, e, preds[1], preds[2], "ate").effect_and_se()
    assert (ours.estimate, ours.se) == ref
    assert np.array_equal(ours.propensity, preds[0])


def _count_trains(monkeypatch) -> list[int]:
    calls = [0]
    train = lgb.train

    def counting(*args, **kwargs):
        calls[0] += 1
        return train(*args, **kwargs)

    monkeypatch.setattr(lgb, "train", counting)
    return calls


@pytest.mark.parametrize("method, per_fold, reusable", [("aipw", 3, 1), ("dml", 2, 1)])
def test_unobserved_refits_reuse_the_unchanged_propensity(monkeypatch, method, per_fold,
                                                          reusable):
    """The simulated confounder's refits share one flipped treatment across outcome
    strengths: its propensity model is reused, and the refitted effects equal full refits."""
    from e2i_pipelines.analytics.causal.estimate import fit_effect
    from e2i_pipelines.analytics.causal.refute_scores import unobserved_effects

    df = gen.nonlinear_confounding(4000, seed=13)
    spec = CausalSpec("t", "y", ["x0", "x1", "x2", "x3"])
    settings = EstimatorSettings(folds=3, nuisance_trees=30, seed=5, n_jobs=2)

    def grid(budget: int) -> tuple[np.ndarray, int]:
        monkeypatch.setattr(nuisance, "MEMO_VALUES", budget)
        frame = prepare_frame(df, spec)  # a fresh frame: fresh bins, empty memo
        calls = _count_trains(monkeypatch)
        out = unobserved_effects(
            frame, lambda f: fit_effect(f, method, settings)[0].estimate,
            np.array([0.2]), np.array([0.0, 1.0, 3.0]), np.random.default_rng(3),
            lambda _: None)
        return out, calls[0]

    reused, trained = grid(3)
    refitted, trained_all = grid(0)
    assert np.array_equal(reused, refitted)
    assert np.unique(reused).size == 3  # the outcome strengths did change the refits
    assert trained_all == 3 * 3 * per_fold
    assert trained == trained_all - 2 * 3 * reusable


def test_memo_keeps_the_most_recently_used_within_its_budget():
    frame, _, _ = _covariates(100, seed=14)
    bins = nuisance.Binned(nuisance.bin_frame(frame, PARAMS), list(frame.columns), PARAMS)
    for key in (b"a", b"b", b"c"):
        bins.remember(key, np.zeros(100))  # budget: 3 x 100 values
    assert bins.recall(b"a") is not None  # now the most recently used
    bins.remember(b"d", np.zeros(100))
    assert list(bins.memo) == [b"c", b"a", b"d"]
    assert bins.recall(b"b") is None


def test_row_wise_histograms_grow_the_column_wise_trees():
    """Our row-wise layout trains the same models as LightGBM's column-wise one."""
    frame, t, y = _covariates(6000, seed=15)
    col = {k: v for k, v in PARAMS.items() if k != "force_row_wise"} | {"force_col_wise": True}
    assert PARAMS["force_row_wise"]
    bins = nuisance.Binned(nuisance.bin_frame(frame, PARAMS), list(frame.columns), PARAMS)
    X = nuisance.tree_matrix(frame)
    rows = np.arange(5000)
    for label, objective in ((t, "binary"), (y, "regression")):
        row_model = _booster(PARAMS, bins.labelled(rows, label[rows]), objective)
        col_model = _booster(col, bins.labelled(rows, label[rows]), objective)
        assert np.array_equal(row_model.predict(X[5000:]), col_model.predict(X[5000:]))
        assert row_model.predict(X[5000:]).std() > 0


@pytest.mark.parametrize("objective", ["binary", "regression"])
def test_scorer_predictions_equal_lightgbm_predict(objective):
    """The bitvector scorer gives LightGBM's predictions bit for bit (categorical with
    missing codes, NaN covariates, the sigmoid of the binary objective)."""
    frame, t, y = _covariates(6000, seed=16)
    frame.loc[frame.index[::17], "x1"] = np.nan
    bins = nuisance.Binned(nuisance.bin_frame(frame, PARAMS), list(frame.columns), PARAMS)
    X = nuisance.tree_matrix(frame)
    label = t if objective == "binary" else y
    booster = _booster(PARAMS, bins.labelled(np.arange(5000), label[:5000]), objective)
    ours = nuisance.predictor(booster, objective)(X[5000:])
    assert np.array_equal(ours, booster.predict(X[5000:]))
    assert ours.std() > 0


def test_fold_subsets_are_built_on_one_thread():
    """Subsets built inside the model pool must not reset LightGBM's process-wide thread
    count to the parent's (num_threads 2 here) while another model trains on one thread."""
    frame, t, _ = _covariates(2000, seed=17)
    params = nuisance.lgb_params(trees=5, n_jobs=2, seed=1)
    bins = nuisance.Binned(nuisance.bin_frame(frame, params), list(frame.columns), params)
    rows = np.arange(0, 2000, 3)
    part = bins.labelled(rows, t[rows])
    assert bins.dataset.params["num_threads"] == 2
    assert part.params["num_threads"] == 1
    assert part.num_data() == rows.size


def test_a_float_frame_is_binned_from_its_own_column_major_block():
    """An all-float64 covariate frame (prepare_frame's: a view of the design matrix) is binned
    without a row-major copy, into the same bins and the same trees as from tree_matrix."""
    rng = np.random.default_rng(21)
    design = np.asfortranarray(rng.normal(size=(4000, 5)))
    design[::13, 2] = np.nan
    frame = pd.DataFrame(design[:, :4], columns=["a", "b", "c", "d"], copy=False)
    view = nuisance.binning_matrix(frame)
    assert np.shares_memory(view, design) and view.flags.f_contiguous
    t = rng.random(4000) < 1 / (1 + np.exp(-design[:, 0]))
    fast = nuisance.Binned(nuisance.bin_frame(frame, PARAMS), list(frame.columns), PARAMS)
    ref_ds = lgb.Dataset(nuisance.tree_matrix(frame), label=np.zeros(4000),
                         feature_name=list(frame.columns),
                         params=nuisance._dataset_params(PARAMS)).construct()
    ref = nuisance.Binned(ref_ds, list(frame.columns), PARAMS)
    rows = np.arange(3000)
    models = [_booster(PARAMS, bins.labelled(rows, t[rows]), "binary") for bins in (fast, ref)]
    assert models[0].model_to_string() == models[1].model_to_string()
    # categoricals (and mixed dtypes) still go through tree_matrix
    frame2, _, _ = _covariates(500, seed=22)
    assert not np.shares_memory(nuisance.binning_matrix(frame2), frame2["x0"].to_numpy())


def test_predictions_in_blocks_equal_one_matrix(monkeypatch):
    """fit_predict scores the test rows a block at a time: the same bits as all at once."""
    frame, t, y = _covariates(3000, seed=23)
    trees = nuisance.TreeNuisance(frame, PARAMS)
    rows, test = np.arange(0, 3000, 2), np.arange(1, 3000, 2)
    task = nuisance.Task(rows, y[rows], "regression", test)
    whole = trees.fit_predict(task)
    monkeypatch.setattr(nuisance, "PREDICT_ROWS", 97)  # 16 blocks, the last one short
    blocked = trees.fit_predict(task)
    assert np.array_equal(whole, blocked) and whole.std() > 0
    booster = _booster({**PARAMS, "num_threads": 1}, trees.bins.labelled(rows, y[rows]),
                       "regression")
    assert np.array_equal(whole, booster.predict(nuisance.tree_matrix(frame, test)))
