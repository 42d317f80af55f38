"""Seeded background rows for interventional SHAP: uniform from the population, or from
the control arm (treatment == 0), read batch by batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.explain.settings import BACKGROUND_SOURCES
from e2i_pipelines.analytics.explain.stream import iter_frames, parquet_rows


def eligible_rows(path: str | Path, control_column: str | None = None) -> np.ndarray:
    """Row numbers a background may use: all, or those with ``control_column == 0``."""
    if control_column is None:
        return np.arange(parquet_rows(path))
    parts, start = [], 0
    for frame in iter_frames(path, [control_column], chunk_rows=500_000):
        parts.append(start + np.flatnonzero(frame[control_column].to_numpy() == 0))
        start += len(frame)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def sample_rows(path: str | Path, columns: list[str], k: int, seed: int,
                rows: np.ndarray | None = None) -> pd.DataFrame:
    """``k`` rows drawn uniformly without replacement from ``rows`` (default: all), in file
    order. Raises ``ValueError`` naming the sizes when ``k`` is not in 1..len(rows)."""
    rows = np.arange(parquet_rows(path)) if rows is None else rows
    if not 0 < k <= len(rows):
        raise ValueError(f"cannot sample {k:,} rows from {len(rows):,} eligible rows")
    chosen = np.sort(np.random.default_rng(seed).choice(rows, size=k, replace=False))
    parts, start = [], 0
    for frame in iter_frames(path, columns, chunk_rows=100_000):
        lo, hi = np.searchsorted(chosen, [start, start + len(frame)])
        if hi > lo:
            parts.append(frame.iloc[chosen[lo:hi] - start])
        start += len(frame)
    return pd.concat(parts, ignore_index=True)


def sample_background(path: str | Path, columns: list[str], k: int, seed: int,
                      source: str = "population", treatment: str | None = None) -> pd.DataFrame:
    """The background set of an interventional run (see module docstring)."""
    if source not in BACKGROUND_SOURCES:
        raise ValueError(f"unknown background source {source!r}; "
                         f"allowed: {list(BACKGROUND_SOURCES)}")
    if source == "control" and not treatment:
        raise ValueError("background source 'control' needs the treatment column")
    rows = eligible_rows(path, treatment if source == "control" else None)
    if not 0 < k <= len(rows):
        where = "control-arm rows (treatment == 0)" if source == "control" else "rows"
        raise ValueError(f"background_rows={k:,} but the data has only {len(rows):,} {where}")
    return sample_rows(path, columns, k, seed, rows)
