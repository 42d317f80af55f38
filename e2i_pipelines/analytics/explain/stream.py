"""Chunked SHAP over a Parquet population: bounded memory, streamed output, running summaries.

Rows are read in batches (``ParquetFile.iter_batches``), explained, checked for additivity
(every row against the explainer's fast raw score, the first ``check_rows`` of each chunk
against LightGBM's own) and appended to a Parquet writer. Memory is bounded by the
chunk size plus the explainer's tables and a fixed-size uniform sample kept for plots.

The per-chunk numerics (:func:`explain_chunk`) run through a mapper: serial here by default,
or a Ray fan-out (:mod:`e2i_pipelines.core.fanout`) that ships a :class:`ShapKernel` (the
model text) and each chunk's model matrix; reading, summaries and writing stay here, so the
output is the same file either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from e2i_pipelines.analytics.explain.treeshap import (
    TreeShapExplainer,
    additivity_error,
    model_matrix,
)
from e2i_pipelines.core.fanout import LocalMapper, Mapper
from e2i_pipelines.core.storage import parquet_file


@dataclass
class ShapSample:
    """Uniform sample without replacement of (feature values, SHAP values) rows.

    Bottom-k sampling: every row gets a random key; the ``size`` smallest keys are kept, so
    the sample is uniform over all rows seen and its size never exceeds ``size``.
    """

    size: int
    n_features: int
    seed: int = 0
    keys: np.ndarray = field(init=False)
    features: np.ndarray = field(init=False)
    shap: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self.keys = np.empty(0)
        self.features = np.empty((0, self.n_features))
        self.shap = np.empty((0, self.n_features))

    def add(self, features: np.ndarray, shap: np.ndarray) -> None:
        keys = self._rng.random(len(features))
        if len(keys) > self.size:  # pre-trim the chunk to its own bottom-k
            keep = np.argpartition(keys, self.size)[: self.size]
            keys, features, shap = keys[keep], features[keep], shap[keep]
        keys = np.concatenate([self.keys, keys])
        features = np.concatenate([self.features, features])
        shap = np.concatenate([self.shap, shap])
        if len(keys) > self.size:
            keep = np.argpartition(keys, self.size)[: self.size]
            keys, features, shap = keys[keep], features[keep], shap[keep]
        self.keys, self.features, self.shap = keys, features, shap


@dataclass
class ShapRunResult:
    """What one streamed SHAP run produced."""

    rows: int
    seconds: float
    method: str
    fallback_reason: str | None
    feature_perturbation: str
    base_value: float
    feature_names: list[str]
    mean_abs_shap: np.ndarray
    mean_shap: np.ndarray
    max_additivity_error: float
    sample: ShapSample
    attributions_path: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")

    def importance(self) -> pd.DataFrame:
        """Features by mean |SHAP| (descending)."""
        table = pd.DataFrame({
            "feature": self.feature_names,
            "mean_abs_shap": self.mean_abs_shap,
            "mean_shap": self.mean_shap,
        })
        return table.sort_values("mean_abs_shap", ascending=False, ignore_index=True)


class ShapKernel:
    """The per-chunk SHAP work, picklable: it ships as the model text and method and builds
    its explainer where it runs (once per process; ``n_jobs()`` threads there)."""

    def __init__(self, explainer: TreeShapExplainer, check_rows: int = 2_000) -> None:
        self._explainer: TreeShapExplainer | None = explainer
        self.method = explainer.requested_method
        self.feature_perturbation = explainer.feature_perturbation
        self.background = explainer.background
        self.check_rows = check_rows
        self._model_text: str | None = None

    @property
    def explainer(self) -> TreeShapExplainer:
        if self._explainer is None:
            import lightgbm as lgb

            from e2i_pipelines.core.budget import n_jobs

            booster = lgb.Booster(model_str=self._model_text)
            self._explainer = TreeShapExplainer(
                booster, self.method, n_threads=n_jobs(),
                feature_perturbation=self.feature_perturbation, background=self.background)
        return self._explainer

    def __getstate__(self) -> dict:
        text = self._model_text or self.explainer.booster.model_to_string()
        return {"method": self.method, "check_rows": self.check_rows, "_model_text": text,
                "feature_perturbation": self.feature_perturbation,
                "background": self.background, "_explainer": None}


@dataclass
class ShapChunk:
    """One chunk on its way through the mapper: the ids and the model matrix."""

    ids: np.ndarray
    X: np.ndarray


def explain_chunk(kernel: ShapKernel, chunk: ShapChunk) -> tuple[np.ndarray, float]:
    """SHAP values of a chunk and its additivity error: every row against the fast raw
    score, the first ``check_rows`` rows against LightGBM's own raw score."""
    ex, X = kernel.explainer, chunk.X
    phi = ex.shap_values(X)
    head = slice(0, min(len(X), kernel.check_rows))
    worst = max(additivity_error(phi, ex.base_value, ex.raw_score(X)),
                additivity_error(phi[head], ex.base_value, ex.library_raw_score(X[head])))
    return phi, worst


def iter_frames(path: str | Path, columns: list[str], chunk_rows: int,
                max_rows: int = 0) -> Iterator[pd.DataFrame]:
    """Frames of exactly ``chunk_rows`` rows (the last may be shorter) of ``columns``.

    Batches are regrouped across row-group boundaries, so small row groups do not shrink
    the chunks; at most ``max_rows`` rows are read (0 = all).
    """
    file = parquet_file(path)
    left = max_rows if max_rows > 0 else file.metadata.num_rows
    pending: list[pa.RecordBatch] = []
    buffered = 0
    for batch in file.iter_batches(batch_size=chunk_rows, columns=columns):
        if left <= 0:
            break
        batch = batch.slice(0, min(batch.num_rows, left))
        left -= batch.num_rows
        pending.append(batch)
        buffered += batch.num_rows
        while buffered >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows).to_pandas()
            rest = table.slice(chunk_rows)
            pending, buffered = rest.to_batches(), rest.num_rows
    if buffered:
        yield pa.Table.from_batches(pending).to_pandas()


def parquet_rows(path: str | Path, max_rows: int = 0) -> int:
    """Rows a run over ``path`` will explain."""
    n = parquet_file(path).metadata.num_rows
    return min(n, max_rows) if max_rows > 0 else n


def attribution_schema(id_column: str, id_type: pa.DataType, features: list[str],
                       base_value: float, method: str,
                       feature_perturbation: str = "tree_path_dependent",
                       background_rows: int = 0) -> pa.Schema:
    """Output schema: the id, then one float64 SHAP column per model feature."""
    fields = [pa.field(id_column, id_type)] + [pa.field(f, pa.float64()) for f in features]
    meta = {"e2i.base_value": repr(base_value), "e2i.method": method,
            "e2i.feature_perturbation": feature_perturbation,
            "e2i.background_rows": str(background_rows),
            "e2i.content": "per-row exact TreeSHAP attributions (raw score scale)"}
    return pa.schema(fields, metadata=meta)


def explain_parquet(
    explainer: TreeShapExplainer,
    source: str | Path,
    out_path: str | Path,
    id_column: str,
    to_model_frame: Callable[[pd.DataFrame], pd.DataFrame],
    chunk_rows: int = 50_000,
    max_rows: int = 0,
    sample_rows: int = 5_000,
    seed: int = 0,
    on_chunk: Callable[[int], None] | None = None,
    check_rows: int = 2_000,
    mapper: Mapper | None = None,
) -> ShapRunResult:
    """Stream ``source`` through ``explainer`` into ``out_path`` (Parquet) chunk by chunk.

    ``mapper`` runs :func:`explain_chunk` (default: serially here; the explainer's kernels
    are threaded); results come back in order, so the output does not depend on it.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    names = explainer.feature_names
    columns = list(dict.fromkeys([id_column, *names]))
    available = parquet_file(source).schema_arrow
    missing = [c for c in columns if c not in available.names]
    if missing:
        raise ValueError(f"{source} has no column(s) {missing} needed by the model")
    background = explainer.background
    schema = attribution_schema(id_column, available.field(id_column).type, names,
                                explainer.base_value, explainer.method,
                                explainer.feature_perturbation,
                                0 if background is None else len(background))
    sample = ShapSample(sample_rows, len(names), seed)
    sum_abs = np.zeros(len(names))
    total = np.zeros(len(names))
    rows, worst = 0, 0.0
    started = time.perf_counter()
    chunks = (ShapChunk(frame[id_column].to_numpy(),
                        model_matrix(explainer.booster, to_model_frame(frame)))
              for frame in iter_frames(source, columns, chunk_rows, max_rows))
    kernel = ShapKernel(explainer, check_rows)
    with pq.ParquetWriter(str(out_path), schema) as writer:
        for chunk, (phi, error) in (mapper or LocalMapper()).map(explain_chunk, kernel, chunks):
            worst = max(worst, error)
            sum_abs += np.abs(phi).sum(axis=0)
            total += phi.sum(axis=0)
            sample.add(chunk.X, phi)
            arrays = [pa.array(chunk.ids)] + [pa.array(phi[:, j]) for j in range(len(names))]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            rows += len(chunk.ids)
            if on_chunk is not None:
                on_chunk(len(chunk.ids))
    seconds = time.perf_counter() - started
    n = max(rows, 1)
    return ShapRunResult(
        rows=rows, seconds=seconds, method=explainer.method,
        fallback_reason=explainer.fallback_reason,
        feature_perturbation=explainer.feature_perturbation, base_value=explainer.base_value,
        feature_names=list(names), mean_abs_shap=sum_abs / n, mean_shap=total / n,
        max_additivity_error=worst, sample=sample, attributions_path=str(out_path),
    )
