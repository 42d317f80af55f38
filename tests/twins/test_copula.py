"""The population model: marginals, correlations, discrete dependence, chunk invariance."""

import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.analytics.twins import copula as tc
from e2i_pipelines.analytics.twins import sampling as ts
from e2i_pipelines.analytics.twins import twin_files as tf
from e2i_pipelines.analytics.twins.fidelity import FidelityAccumulator

REGIONS = ["North", "South", "East", "West"]


def confounded_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Skewed, correlated covariates; a categorical and a binary that shift them; treatment."""
    rng = np.random.default_rng(seed)
    region = rng.integers(0, 4, n)
    z = rng.multivariate_normal([0, 0, 0], [[1, 0.6, 0.3], [0.6, 1, -0.4], [0.3, -0.4, 1]], n)
    flag = (rng.random(n) < 0.3).astype(np.int8)
    volume = np.exp(4 + 0.5 * z[:, 0] + 0.3 * region)
    score = 1 / (1 + np.exp(-z[:, 1])) + 0.1 * flag
    visits = rng.poisson(2 + 2 * (z[:, 2] > 0) + flag).astype(np.float64)
    logit = -0.5 + 0.8 * z[:, 0] + 1.2 * (score - 0.5) + 0.4 * (region == 1) + 0.5 * flag
    treatment = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return pd.DataFrame({
        "region": pd.Categorical.from_codes(region, REGIONS),
        "volume": volume, "score": score, "visits": visits, "flag": flag,
        "treatment": treatment,
    })


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return confounded_frame(30_000)


@pytest.fixture(scope="module")
def model(real) -> tc.CopulaModel:
    return tc.fit_copula(real, priority=["treatment"], min_stratum_rows=100, block_rows=4_096,
                         seed=1)


def fidelity(real: pd.DataFrame, model: tc.CopulaModel, twins: pd.DataFrame) -> dict:
    acc = FidelityAccumulator(real, model.numeric, model.discrete_names)
    acc.update(twins)
    return acc.report()


def treated_volume_ratio(frame: pd.DataFrame) -> np.ndarray:
    """Mean volume of treated / untreated, per region."""
    means = frame.groupby(["region", "treatment"], observed=True)["volume"].mean().unstack()
    return (means[1] / means[0]).to_numpy()


def test_columns_roles_and_dtypes(real, model):
    assert model.numeric == ["volume", "score", "visits"]
    assert model.discrete_names == ["region", "flag", "treatment"]
    assert model.integer_valued == ["visits"]
    twins = ts.sample(model, 1_000, seed=3)
    assert list(twins.columns) == [tc.TWIN_ID, *real.columns]
    assert twins[tc.TWIN_ID].tolist() == list(range(1_000))
    assert isinstance(twins["region"].dtype, pd.CategoricalDtype)
    assert list(twins["region"].cat.categories) == REGIONS
    assert twins["treatment"].dtype == np.int8 and set(twins["treatment"]) <= {0, 1}
    assert np.all(twins["visits"] % 1 == 0)


def test_marginals_and_correlations_reproduce_the_source(real, model):
    twins = ts.sample(model, 60_000, seed=5)
    report = fidelity(real, model, twins)
    assert report["max_ks"] < 0.02, report["ks"]
    assert report["max_abs_corr_diff"] < 0.03, report["max_corr_diff_pair"]
    assert report["max_frequency_diff"] < 0.01, report["frequency_diff"]
    # the treatment's dependence on the confounders survives, per region too
    np.testing.assert_allclose(treated_volume_ratio(twins), treated_volume_ratio(real), rtol=0.05)


def test_binary_correlation_preserved_better_than_naive_copula():
    rng = np.random.default_rng(4)
    n = 30_000
    x = rng.normal(size=n)
    t = (0.8 * x + 0.6 * rng.normal(size=n) > 0.7).astype(np.int8)
    frame = pd.DataFrame({"x": np.exp(x), "t": t})
    real_corr = frame.corr().iloc[0, 1]
    ours = ts.sample(tc.fit_copula(frame, seed=0), 60_000, seed=1)
    naive = ts.sample(tc.fit_copula(frame, discrete=[], seed=0), 60_000, seed=1)
    err_ours = abs(ours.drop(columns=tc.TWIN_ID).corr().iloc[0, 1] - real_corr)
    err_naive = abs(naive.drop(columns=tc.TWIN_ID).corr().iloc[0, 1] - real_corr)
    assert set(naive["t"]) == {0, 1}  # the naive model still emits 0/1 ...
    assert err_ours < 0.015
    assert err_naive > 3 * err_ours and err_naive > 0.03  # ... but loses the dependence


@pytest.mark.parametrize(("chunk_rows", "workers"),
                         [(1, 1), (999, 1), (4_096, 1), (4_096, 3), (5_000, 2), (9_000, 1),
                          (100_000, 2)])
def test_chunked_sampling_equals_one_shot(model, chunk_rows, workers):
    n = 10_500
    one_shot = ts.sample(model, n, seed=11)
    chunks = list(ts.iter_chunks(model, n, chunk_rows, seed=11, workers=workers))
    assert max(len(c) for c in chunks) <= max(chunk_rows, model.block_rows)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), one_shot)
    pd.testing.assert_frame_equal(ts.sample_range(model, 3_000, 7_000, seed=11),
                                  one_shot.iloc[3_000:7_000].reset_index(drop=True))


def test_seeds_are_deterministic(real, model):
    again = tc.fit_copula(real, priority=["treatment"], min_stratum_rows=100, block_rows=4_096,
                          seed=1)
    np.testing.assert_array_equal(again.quantiles, model.quantiles)
    np.testing.assert_array_equal(again.chol, model.chol)
    a, b = ts.sample(model, 2_000, seed=2), ts.sample(model, 2_000, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not ts.sample(model, 2_000, seed=3)["volume"].equals(a["volume"])


def test_streamed_parquet_equals_one_shot(tmp_path, model):
    path = tmp_path / "twins.parquet"
    seen = []
    written = tf.write_twins(model, 9_000, path, chunk_rows=4_096, seed=8,
                             on_chunk=lambda c: seen.append(len(c)))
    assert written == 9_000 and seen == [4_096, 4_096, 808]
    back = pd.concat(tf.iter_parquet_chunks(path, 5_000), ignore_index=True)
    expected = ts.sample(model, 9_000, seed=8)
    pd.testing.assert_frame_equal(back, expected, check_categorical=False)
    assert list(back["region"].cat.categories) == REGIONS


def test_small_strata_borrow_the_treatment_copula(real):
    model = tc.fit_copula(real, priority=["treatment"], min_stratum_rows=2_000, seed=0)
    assert 0 < model.pooled_share < 1
    twins = ts.sample(model, 40_000, seed=1)
    report = fidelity(real, model, twins)
    # discrete combinations keep their frequencies; numerics of pooled strata lose some detail
    assert report["max_frequency_diff"] < 0.01
    assert report["max_ks"] < 0.06


def test_sample_parquet_rows(tmp_path, real):
    path = tmp_path / "real.parquet"
    real.to_parquet(path)
    got = tf.sample_parquet_rows(path, ["volume", "region"], 5_000, seed=1, batch_rows=4_000)
    assert len(got) == 5_000 and list(got.columns) == ["volume", "region"]
    pd.testing.assert_frame_equal(
        got, tf.sample_parquet_rows(path, ["volume", "region"], 5_000, seed=1, batch_rows=4_000))
    assert got["volume"].isin(real["volume"]).all()
    with pytest.raises(ValueError, match="nope"):
        tf.sample_parquet_rows(path, ["nope"], 10, seed=0)


def test_bad_input_is_named(real):
    with pytest.raises(ValueError, match="missing"):
        tc.fit_copula(real, ["volume", "missing"])
    holes = real.copy()
    holes.loc[3, "score"] = np.nan
    with pytest.raises(ValueError, match="score"):
        tc.fit_copula(holes)
    with pytest.raises(ValueError, match="n must be > 0"):
        ts.sample(tc.fit_copula(real.head(500)), 0, seed=0)
    with pytest.raises(ValueError, match="chunk_rows"):
        ts.chunk_bounds(tc.fit_copula(real.head(500)), 10, 0)


def test_streaming_memory_is_bounded_by_the_chunk_not_n(tmp_path, model):
    import tracemalloc

    def peak_bytes(n: int) -> int:
        tracemalloc.start()
        tf.write_twins(model, n, tmp_path / f"t{n}.parquet", chunk_rows=4_096, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    small, large = peak_bytes(20_000), peak_bytes(200_000)
    one_chunk = ts.sample(model, 4_096, seed=0).memory_usage(deep=True).sum()
    assert large < 1.5 * small  # 10x the twins, about the same peak
    assert large < 10 * one_chunk  # far below holding all 200k twins (~49 chunks)


def test_declared_categorical_codes_become_strata():
    """An integer-coded region with 10 levels is continuous by default, strata when declared."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"region": rng.integers(0, 10, 5000), "x": rng.normal(size=5000),
                          "t": rng.integers(0, 2, 5000)})
    auto = tc.fit_copula(frame, ["region", "x", "t"], priority=["t"])
    declared = tc.fit_copula(frame, ["region", "x", "t"], priority=["t"], categorical=["region"])
    assert "region" not in auto.discrete_names and "region" in declared.discrete_names
    twins = ts.sample(declared, 20000, seed=1)
    assert set(np.unique(twins["region"])) <= set(range(10))
    shares = twins["region"].value_counts(normalize=True).sort_index().to_numpy()
    assert np.abs(shares - 0.1).max() < 0.02


def test_fused_sampling_kernel_matches_the_numpy_reference(model):
    """_fill_components = ndtr(z @ chol.T) -> quantile interpolation, to rounding."""
    from scipy import special

    rng = np.random.default_rng(3)
    for c in range(len(model.chol)):
        z = rng.standard_normal((2_000, len(model.numeric)))
        z[:5] *= 8.0  # tails: u rounds to 0 or 1
        want = ts._interpolate(special.ndtr(ts._correlate(z, model.chol[c])), model.quantiles[c])
        got = np.empty_like(want)
        dest = rng.permutation(len(z))  # row i of z lands in row dest[i]
        ts._fill_components(z, np.array([0, len(z)]), np.array([c]), model.chol,
                            model.quantiles, got, dest)
        np.testing.assert_allclose(got[dest], want, rtol=1e-12, atol=1e-9)


def test_one_kernel_call_for_all_components_equals_one_call_each(model):
    """Segments of one ``_fill_components`` call are the per-component calls, bit for bit."""
    rng = np.random.default_rng(4)
    comps = rng.permutation(len(model.chol))[:7]
    starts = np.concatenate([[0], np.cumsum(rng.integers(1, 300, len(comps)))])
    z = rng.standard_normal((starts[-1], len(model.numeric)))
    dest = rng.permutation(len(z))
    together, alone = np.empty_like(z), np.empty_like(z)
    ts._fill_components(z, starts, comps, model.chol, model.quantiles, together, dest)
    for s, c in enumerate(comps):
        seg = slice(starts[s], starts[s + 1])
        ts._fill_components(z[seg], np.array([0, seg.stop - seg.start]), np.array([c]),
                            model.chol, model.quantiles, alone, dest[seg])
    assert np.array_equal(together, alone)


def test_unique_rows_equal_numpys_row_unique():
    rng = np.random.default_rng(5)
    codes = np.column_stack([rng.integers(0, k, 5_000) for k in (3, 1, 7, 2)]).astype(np.int32)
    strata, inverse, counts = tc._unique_rows(codes)
    want = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    np.testing.assert_array_equal(strata, want[0])
    np.testing.assert_array_equal(inverse, want[1].reshape(-1))
    np.testing.assert_array_equal(counts, want[2])


def test_ranks_break_ties_at_random_and_only_then():
    """Distinct values rank by value alone; tied ones by the column's random draw (the same
    stream either way, so the other columns do not depend on where ties are)."""
    rng = np.random.default_rng(6)
    x = np.column_stack([rng.normal(size=3_000), rng.integers(0, 5, 3_000).astype(float)])
    ranks, xs = tc._ranks(x, np.random.default_rng(1))
    draws = np.random.default_rng(1)
    for j in range(2):
        tie_break = draws.random(len(x))
        order = np.lexsort((tie_break, x[:, j]))
        np.testing.assert_array_equal(ranks[order, j], np.arange(len(x)))
        np.testing.assert_array_equal(xs[:, j], x[order, j])


def test_twins_arrow_table_is_pandas_table(model):
    """The writer's zero-copy Arrow table is ``pa.Table.from_pandas``'s, metadata included."""
    import pyarrow as pa

    chunk = ts.sample(model, 5_000, seed=2)
    want = pa.Table.from_pandas(chunk, preserve_index=False)
    got = tf._arrow_table(chunk, want.schema)
    assert got.equals(want) and got.schema.equals(want.schema, check_metadata=True)
