"""Uplift of the outcome model and the simulated policies on twins."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.twins import copula as tc
from e2i_pipelines.analytics.twins import sampling as ts
from e2i_pipelines.analytics.twins import twin_files as tf
from e2i_pipelines.analytics.twins.interventions import (
    PolicyAccumulator,
    TargetingError,
    model_input,
    simulate_policies,
    target_mask,
    validate_rule,
)
from e2i_pipelines.analytics.twins.targeting import TargetingRule
from e2i_pipelines.analytics.twins.uplift import TreeUplift, booster_uplift
from e2i_pipelines.core.refs import ModelRef

LEVELS = ["a", "b", "c"]


def training_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """y = 1 + x + effect(segment, x) * t + noise; t confounded by x."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    seg = rng.integers(0, 3, n)
    t = (rng.random(n) < 1 / (1 + np.exp(-x))).astype(np.int8)
    effect = np.array([1.0, 3.0, 5.0])[seg] + (x > 0)
    y = 1 + x + effect * t + rng.normal(scale=0.1, size=n)
    return pd.DataFrame({"treatment": t, "x": x, "segment": pd.Categorical.from_codes(seg, LEVELS),
                         "y": y})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    frame = training_frame(20_000)
    feats = ["treatment", "x", "segment"]
    booster = lgb.train({"objective": "regression", "num_leaves": 15, "verbose": -1,
                         "num_threads": 1, "seed": 0},
                        lgb.Dataset(frame[feats], frame["y"]), num_boost_round=60)
    path = tmp_path_factory.mktemp("model") / "model.txt"
    booster.save_model(str(path))
    ref = ModelRef(str(path), feats, "treatment", "y", {"segment": LEVELS})
    return frame, ref


def test_tree_uplift_equals_booster_predict(fitted):
    frame, ref = fitted
    booster = ref.load_booster()
    inputs = ref.model_frame(frame.head(3_000))
    inputs.loc[inputs.index[:50], "x"] = np.nan  # missing values take LightGBM's default path
    inputs.loc[inputs.index[50:80], "segment"] = np.nan
    fast = TreeUplift(booster, "treatment", n_threads=2)
    assert 0 < fast.trees_used <= fast.trees_total == 60
    np.testing.assert_allclose(fast.uplift(inputs), booster_uplift(booster, inputs, "treatment"),
                               rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="not a model feature"):
        TreeUplift(booster, "x_missing")


def test_simulated_ate_matches_the_model_and_the_truth(tmp_path, fitted):
    frame, ref = fitted
    model = tc.fit_copula(frame[["x", "segment", "treatment"]], priority=["treatment"],
                          block_rows=2_048, seed=0)
    n = 20_000
    path = tmp_path / "twins.parquet"
    tf.write_twins(model, n, path, chunk_rows=4_096, seed=1)
    rule = TargetingRule(query="x > 0 and segment == 'c'")
    seen = []
    report, kept = simulate_policies(str(path), ref, rule, treatment_column="treatment",
                                     chunk_rows=3_000, n_threads=2, on_chunk=seen.append)
    assert sum(seen) == n and max(seen) <= 3_000
    # expected values computed one-shot with booster.predict on the same twins
    twins = ts.sample(model, n, seed=1)
    d = booster_uplift(ref.load_booster(), ref.model_frame(twins), "treatment")
    targeted = (twins["x"] > 0).to_numpy() & (twins["segment"] == "c").to_numpy()
    observed = twins["treatment"].to_numpy() == 1
    assert report["n_twins"] == n
    assert report["ate"] == pytest.approx(d.mean(), abs=1e-9)
    assert report["ate_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(n), rel=1e-6)
    assert report["ate_ci_low"] < d.mean() < report["ate_ci_high"]
    assert report["uplift_targeted"] == pytest.approx((d * targeted).mean(), abs=1e-9)
    assert report["treated_share_targeted"] == pytest.approx(targeted.mean())
    assert report["uplift_per_treated_targeted"] == pytest.approx(d[targeted].mean(), abs=1e-9)
    assert report["uplift_status_quo"] == pytest.approx((d * observed).mean(), abs=1e-9)
    np.testing.assert_allclose(kept, d, atol=1e-9)
    # and the model + twins recover the true effect of the data generating process
    true_ate = np.mean(np.array([1.0, 3.0, 5.0])[frame["segment"].cat.codes] + (frame["x"] > 0))
    assert report["ate"] == pytest.approx(true_ate, abs=0.1)
    assert report["uplift_check_max_abs_diff"] <= 1e-9


def test_top_share_by_uplift_treats_that_share(tmp_path, fitted):
    frame, ref = fitted
    model = tc.fit_copula(frame[["x", "segment", "treatment"]], seed=0)
    path = tmp_path / "twins.parquet"
    tf.write_twins(model, 30_000, path, chunk_rows=65_536, seed=2)
    rule = TargetingRule(top_share=0.25, score_column="uplift")
    report, _ = simulate_policies(str(path), ref, rule, treatment_column="treatment",
                                  chunk_rows=10_000)
    assert report["treated_share_targeted"] == pytest.approx(0.25, abs=0.02)
    # treating the top quarter by uplift beats a quarter of treat-all
    assert report["uplift_targeted"] > 0.25 * report["ate"] * 1.3


def test_policy_accumulator_matches_numpy():
    rng = np.random.default_rng(0)
    d, m, t = rng.normal(2, 1, 1_000), rng.random(1_000) < 0.3, rng.integers(0, 2, 1_000)
    acc = PolicyAccumulator(keep_rows=100)
    for i in range(0, 1_000, 300):
        acc.update(d[i:i + 300], m[i:i + 300], t[i:i + 300])
    report = acc.report()
    assert report["ate"] == pytest.approx(d.mean())
    assert report["uplift_targeted_se"] == pytest.approx((d * m).std(ddof=1) / np.sqrt(1_000))
    assert report["treated_share_status_quo"] == pytest.approx(t.mean())
    assert len(acc.kept_uplift()) == 100


def test_targeting_rules_are_validated_with_named_problems():
    sample = pd.DataFrame({"x": [0.1, 2.0], "segment": pd.Categorical(["a", "c"], LEVELS)})
    with pytest.raises(TargetingError, match="unknown column 'engagement'"):
        validate_rule(TargetingRule(query="engagement > 0.5"), sample)
    with pytest.raises(TargetingError, match=r"operator '\+' is not allowed"):
        TargetingRule(query="x + 1")  # refused when parsed, before any twin is read
    with pytest.raises(TargetingError, match="syntax error"):
        TargetingRule(query="x >")
    with pytest.raises(TargetingError, match="needs a numeric column; 'segment'"):
        validate_rule(TargetingRule(conditions=[{"column": "segment", "op": ">", "value": 1}]),
                      sample)
    with pytest.raises(TargetingError, match="score_column 'nope'"):
        validate_rule(TargetingRule(top_share=0.1, score_column="nope"), sample)
    with pytest.raises(TargetingError, match="top_share"):
        TargetingRule(top_share=1.5, score_column="x")
    with pytest.raises(TargetingError, match="exactly one"):
        TargetingRule()
    with pytest.raises(TargetingError, match="exactly one"):
        TargetingRule(query="x > 1", conditions=[{"column": "x", "op": ">", "value": 1}])
    rule = TargetingRule(query="x > 1 or segment == 'a'")
    validate_rule(rule, sample)
    assert target_mask(rule, sample, np.zeros(2), None).tolist() == [True, True]
    structured = TargetingRule(conditions=[{"any": [{"column": "x", "op": ">", "value": 1},
                                                    {"column": "segment", "op": "==", "value": "a"}]}])
    assert structured.tree == rule.tree and structured.describe() == rule.describe()


def test_models_the_fast_path_does_not_cover_fall_back_to_booster_predict(tmp_path):
    frame = training_frame(4_000)
    feats = ["treatment", "x"]
    booster = lgb.train({"objective": "regression", "linear_tree": True, "num_leaves": 7,
                         "verbose": -1, "num_threads": 1},
                        lgb.Dataset(frame[feats], frame["y"]), num_boost_round=10)
    booster.save_model(str(tmp_path / "linear.txt"))
    ref = ModelRef(str(tmp_path / "linear.txt"), feats, "treatment", "y")
    model = tc.fit_copula(frame[feats], seed=0)
    tf.write_twins(model, 3_000, tmp_path / "twins.parquet", chunk_rows=1_000, seed=0)
    report, kept = simulate_policies(str(tmp_path / "twins.parquet"), ref,
                                     TargetingRule(query="x > 0"), treatment_column="treatment",
                                     chunk_rows=1_000)
    twins = ts.sample(model, 3_000, seed=0)
    expected = booster_uplift(ref.load_booster(), ref.model_frame(twins), "treatment")
    assert report["uplift_method"] == "booster"
    assert report["ate"] == pytest.approx(expected.mean(), abs=1e-9)


def test_model_input_equals_model_frame(fitted):
    """Code remapping gives the same frame as the str conversion, for any category order,
    unknown and missing values, and non-categorical columns."""
    _, ref = fitted
    rng = np.random.default_rng(1)
    raw = rng.choice(["c", "a", "zz", None], 500)
    chunk = pd.DataFrame({"treatment": rng.integers(0, 2, 500).astype(np.int8),
                          "x": rng.normal(size=500),
                          "segment": pd.Categorical(raw, categories=["zz", "c", "a"])})
    for frame in (chunk, chunk.assign(segment=chunk["segment"].astype(object))):
        fast, slow = model_input(ref, frame), ref.model_frame(frame)
        pd.testing.assert_frame_equal(fast, slow)
    assert model_input(ref, chunk)["segment"].isna().sum() > 0  # "zz" is not a model level
