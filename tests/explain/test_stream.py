"""Chunked streaming: same values as one shot, bounded sample, max_rows, additivity per chunk."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shap

from e2i_pipelines.analytics.explain.stream import (
    ShapSample,
    explain_parquet,
    iter_frames,
    parquet_rows,
)
from e2i_pipelines.analytics.explain.treeshap import TreeShapExplainer


@pytest.fixture(scope="module")
def source(tmp_path_factory, mixed_data):
    path = tmp_path_factory.mktemp("src") / "data.parquet"
    frame = mixed_data.assign(row_id=np.arange(len(mixed_data), dtype=np.int64) * 7 + 1)
    frame.to_parquet(path, row_group_size=1_000)
    return path, frame


def _to_model_frame(booster):
    return lambda df: df[booster.feature_name()]


@pytest.mark.parametrize("method", ["fast", "lightgbm"])
def test_chunked_output_equals_one_shot_and_shap(mixed_model, source, tmp_path, method):
    path, frame = source
    explainer = TreeShapExplainer(mixed_model, method)
    seen = []
    result = explain_parquet(explainer, path, tmp_path / "out.parquet", "row_id",
                             _to_model_frame(mixed_model), chunk_rows=700, sample_rows=250,
                             on_chunk=seen.append)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    names = mixed_model.feature_name()
    one_shot = explainer.shap_values(frame[names])
    reference = shap.TreeExplainer(mixed_model).shap_values(frame[names])
    assert seen == [700] * 4 + [len(frame) - 2800]
    assert result.rows == len(frame) == len(out)
    assert list(out.columns) == ["row_id", *names]
    np.testing.assert_array_equal(out["row_id"].to_numpy(), frame["row_id"].to_numpy())
    np.testing.assert_array_equal(out[names].to_numpy(), one_shot)
    assert np.max(np.abs(out[names].to_numpy() - reference)) <= 1e-6
    assert result.max_additivity_error <= 1e-6
    np.testing.assert_allclose(result.mean_abs_shap, np.abs(one_shot).mean(axis=0), rtol=1e-12)
    meta = pq.read_schema(tmp_path / "out.parquet").metadata
    assert float(meta[b"e2i.base_value"]) == pytest.approx(explainer.base_value, abs=0)
    assert result.importance()["mean_abs_shap"].is_monotonic_decreasing


def test_max_rows_explains_a_prefix(mixed_model, source, tmp_path):
    path, frame = source
    explainer = TreeShapExplainer(mixed_model)
    result = explain_parquet(explainer, path, tmp_path / "out.parquet", "row_id",
                             _to_model_frame(mixed_model), chunk_rows=400, max_rows=1_234)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert result.rows == len(out) == 1_234 == parquet_rows(path, 1_234)
    np.testing.assert_array_equal(out["row_id"].to_numpy(), frame["row_id"].to_numpy()[:1_234])


def test_missing_column_is_named(mixed_model, source, tmp_path):
    path, _ = source
    explainer = TreeShapExplainer(mixed_model)
    with pytest.raises(ValueError, match=r"no column\(s\) \['hcp_id'\]"):
        explain_parquet(explainer, path, tmp_path / "o.parquet", "hcp_id",
                        _to_model_frame(mixed_model))
    with pytest.raises(ValueError, match="chunk_rows must be positive"):
        explain_parquet(explainer, path, tmp_path / "o.parquet", "row_id",
                        _to_model_frame(mixed_model), chunk_rows=0)


def test_iter_frames_respects_chunk_and_limit(source):
    path, _ = source
    sizes = [len(f) for f in iter_frames(path, ["row_id"], chunk_rows=600, max_rows=1_500)]
    assert sizes == [600, 600, 300]


def test_sample_is_bounded_and_uniform():
    sample = ShapSample(size=500, n_features=1, seed=1)
    for start in range(0, 20_000, 3_000):
        idx = np.arange(start, min(start + 3_000, 20_000), dtype=float)[:, None]
        sample.add(idx, -idx)
        assert len(sample.keys) <= 500
    rows = sample.features[:, 0]
    assert len(rows) == 500 and len(np.unique(rows)) == 500
    np.testing.assert_array_equal(sample.shap[:, 0], -rows)  # rows stay paired
    # uniform over the whole stream: each fifth of the rows holds about a fifth of the sample
    counts = np.histogram(rows, bins=5, range=(0, 20_000))[0]
    assert counts.min() > 60 and counts.max() < 140
    assert isinstance(pd.Series(counts), pd.Series)
