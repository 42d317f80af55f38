"""Generative model of a population for digital twins: stratified Gaussian copulas.

Discrete columns (categoricals, binaries, the treatment) are modelled exactly by their joint
frequency table: every combination seen in the data is a *stratum*. Within a stratum the
numeric columns follow a Gaussian copula with empirical marginals, stored as a fixed grid of
quantiles so sampling is a vectorised interpolation. Conditioning on the stratum keeps the
dependence between discrete and numeric columns (a naive copula over 0/1 columns attenuates
it). Strata with too few rows borrow the copula of a coarser key: the least informative
discrete columns are dropped one by one, ``priority`` columns (the treatment) last of all.

Sampling: :mod:`.sampling`; the twins file: :mod:`.twin_files`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

DEFAULT_GRID = 1024
DEFAULT_BLOCK_ROWS = 1 << 16
DEFAULT_FIT_ROWS = 200_000
TWIN_ID = "twin_id"


@dataclass(frozen=True)
class DiscreteColumn:
    """A conditioning column: its levels (in code order) and how to rebuild its values."""

    name: str
    levels: list[Any]
    kind: str  # "category" (pandas categorical output) or a numpy dtype string
    categories: list[Any] | None = None  # full category list of a categorical column


@dataclass
class CopulaModel:
    """A fitted population model. ``components`` hold (quantile grid, Cholesky) pairs."""

    columns: list[str]  # output column order
    numeric: list[str]
    numeric_dtypes: dict[str, str]
    integer_valued: list[str]  # numeric columns with whole values: rounded on sampling
    discrete: list[DiscreteColumn]
    strata_codes: np.ndarray  # (S, n_discrete) int32 level codes per stratum
    strata_probs: np.ndarray  # (S,) frequencies in the fit sample
    strata_component: np.ndarray  # (S,) index into quantiles/chol
    quantiles: np.ndarray  # (C, p, G) per component: quantile grid of each numeric column
    chol: np.ndarray  # (C, p, p) Cholesky factors of the latent correlations
    n_fit_rows: int
    block_rows: int = DEFAULT_BLOCK_ROWS
    pooled_share: float = 0.0  # share of fit rows whose stratum borrowed a coarser copula
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_strata(self) -> int:
        return len(self.strata_probs)

    @property
    def discrete_names(self) -> list[str]:
        return [d.name for d in self.discrete]


def _is_discrete(series: pd.Series, max_numeric_levels: int) -> bool:
    if isinstance(series.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(series):
        return True
    if not pd.api.types.is_numeric_dtype(series):
        return True
    return series.nunique(dropna=False) <= max_numeric_levels


def _encode_discrete(series: pd.Series) -> tuple[np.ndarray, DiscreteColumn]:
    """Integer codes of a discrete column and the description to decode them."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = list(series.cat.categories)
        return series.cat.codes.to_numpy().astype(np.int32), DiscreteColumn(
            series.name, cats, "category", cats)
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        levels, codes = np.unique(series.to_numpy(), return_inverse=True)
        return codes.astype(np.int32), DiscreteColumn(
            series.name, levels.tolist(), str(series.dtype))
    levels = sorted(series.astype(str).unique())
    codes = pd.Categorical(series.astype(str), categories=levels).codes.astype(np.int32)
    return codes, DiscreteColumn(series.name, levels, "category", levels)


def _ranks(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise ranks 0..n-1 with ties broken at random, and the sorted columns.

    Random tie-breaking (the distributional transform) keeps the latent correlation of
    integer-valued columns; average ranks would attenuate it.
    """
    n, p = x.shape
    ranks = np.empty((n, p), dtype=np.float64)
    xs = np.empty((n, p), dtype=np.float64)
    for j in range(p):
        tie_break = rng.random(n)  # drawn for every column: the stream does not depend on ties
        order = np.argsort(x[:, j])
        column = x[order, j]
        if n > 1 and (column[1:] == column[:-1]).any():  # ties: the order is not unique
            order = np.lexsort((tie_break, x[:, j]))
            column = x[order, j]
        ranks[order, j] = np.arange(n)
        xs[:, j] = column
    return ranks, xs


def _unique_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(codes, axis=0, return_inverse=True, return_counts=True)`` for codes >= 0,
    through one mixed-radix integer key per row (a 1-D sort instead of a row sort)."""
    radix = codes.max(axis=0).astype(np.int64) + 1
    if np.sum(np.log2(radix)) >= 62:
        strata, inverse, counts = np.unique(codes, axis=0, return_inverse=True,
                                            return_counts=True)
        return strata, inverse.reshape(-1), counts
    key = np.zeros(len(codes), dtype=np.int64)
    for j in range(codes.shape[1]):  # the first column is the most significant digit
        key = key * radix[j] + codes[:, j]
    _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True,
                                          return_counts=True)
    return codes[first], inverse.reshape(-1), counts


def _nearest_correlation(c: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Symmetric positive-definite correlation matrix closest (by eigen-clipping) to ``c``."""
    c = np.nan_to_num((c + c.T) / 2.0, nan=0.0)
    np.fill_diagonal(c, 1.0)
    w, v = np.linalg.eigh(c)
    if w.min() > floor:
        return c
    c = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(c))
    c = c / np.outer(d, d)
    np.fill_diagonal(c, 1.0)
    return c


def _fit_component(x: np.ndarray, levels: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Quantile grid (p, G) and Cholesky factor (p, p) of one group of numeric rows."""
    n, p = x.shape
    if p == 0:
        return np.zeros((0, len(levels))), np.zeros((0, 0))
    ranks, xs = _ranks(x, rng)
    pos = levels * (n - 1)  # linear interpolation between order statistics (numpy default)
    lo = np.minimum(pos.astype(np.int64), max(n - 2, 0))
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo)[:, None]
    grid = (xs[lo] + frac * (xs[hi] - xs[lo])).T
    if n < 3:
        return np.ascontiguousarray(grid), np.eye(p)
    z = special.ndtri((ranks + 0.5) / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(z, rowvar=False) if p > 1 else np.ones((1, 1))
    corr = _nearest_correlation(np.atleast_2d(corr))
    return np.ascontiguousarray(grid), np.linalg.cholesky(corr)


def _backoff_keys(x: np.ndarray, codes: np.ndarray, discrete: list[str],
                  priority: list[str]) -> list[list[int]]:
    """Coarser stratum keys for small strata: drop the least informative discrete column first.

    Informativeness is the mean share of numeric variance explained by the column's levels
    (eta squared); priority columns are never dropped. The last key is the priority columns.
    """
    prio = [discrete.index(c) for c in priority]
    others = [j for j in range(len(discrete)) if j not in prio]
    if x.shape[1] and len(x) > 1:
        xs = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)

        def eta2(j: int) -> float:
            _, inv = np.unique(codes[:, j], return_inverse=True)
            n_g = np.bincount(inv)
            means = np.stack([np.bincount(inv, weights=xs[:, k]) for k in range(xs.shape[1])],
                             axis=1) / n_g[:, None]
            return float((n_g[:, None] * means**2).sum() / xs.size)

        others.sort(key=eta2, reverse=True)
    keys = [prio + others[:k] for k in range(len(others) - 1, -1, -1)]
    return [k for k in keys if k]


def fit_copula(
    frame: pd.DataFrame,
    columns: list[str] | None = None,
    *,
    discrete: list[str] | None = None,
    priority: list[str] | None = None,
    max_fit_rows: int = DEFAULT_FIT_ROWS,
    grid_size: int = DEFAULT_GRID,
    min_stratum_rows: int = 200,
    max_numeric_levels: int = 2,
    categorical: Sequence[str] = (),
    block_rows: int = DEFAULT_BLOCK_ROWS,
    seed: int = 0,
) -> CopulaModel:
    """Fit the population model on (a sample of at most ``max_fit_rows`` of) ``frame``.

    ``discrete`` overrides the automatic choice (``categorical`` columns, non-numeric, bool, or
    numeric with at most ``max_numeric_levels`` values); discrete columns define the strata; ``priority`` discrete columns (e.g. the treatment) are
    kept in the fallback copula of small strata.
    """
    columns = list(columns or frame.columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the data; available: {list(frame.columns)}")
    if frame.empty:
        raise ValueError("cannot fit a population model on an empty frame")
    if grid_size < 2 or block_rows < 1 or max_fit_rows < 2:
        raise ValueError("grid_size >= 2, block_rows >= 1 and max_fit_rows >= 2 are required")
    nulls = [c for c in columns if frame[c].isna().any()]
    if nulls:
        raise ValueError(f"columns {nulls} have missing values; impute or drop them first")
    data = frame[columns]
    if len(data) > max_fit_rows:
        data = data.sample(max_fit_rows, random_state=np.random.RandomState(seed % 2**32))
    data = data.reset_index(drop=True)
    if discrete is None:
        declared = set(categorical)
        discrete = [c for c in columns
                    if c in declared or _is_discrete(data[c], max_numeric_levels)]
    unknown = [c for c in [*discrete, *(priority or [])] if c not in columns]
    if unknown:
        raise ValueError(f"discrete/priority columns {unknown} are not among the modelled columns")
    not_numeric = [c for c in columns if c not in discrete
                   and not pd.api.types.is_numeric_dtype(data[c])]
    if not_numeric:
        raise ValueError(f"columns {not_numeric} are not numeric and must be discrete")
    numeric = [c for c in columns if c not in discrete]
    priority = [c for c in (priority or []) if c in discrete]

    x = data[numeric].to_numpy(dtype=np.float64)
    integer_valued = [c for j, c in enumerate(numeric) if np.all(np.mod(x[:, j], 1.0) == 0.0)]
    codes_list, described = [], []
    for c in discrete:
        codes, desc = _encode_discrete(data[c])
        codes_list.append(codes)
        described.append(desc)
    codes = np.column_stack(codes_list) if codes_list else np.zeros((len(data), 0), np.int32)
    levels = np.linspace(0.0, 1.0, grid_size)

    if codes.shape[1]:
        strata, stratum_of_row, counts = _unique_rows(codes)
    else:
        strata = np.zeros((1, 0), np.int32)
        stratum_of_row, counts = np.zeros(len(data), np.int64), np.array([len(data)])
    grids, chols = [], []

    fit_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))

    def add(rows: np.ndarray) -> int:
        g, ch = _fit_component(x[rows], levels, fit_rng)
        grids.append(g)
        chols.append(ch)
        return len(grids) - 1

    global_component = add(np.arange(len(data)))
    backoff = _backoff_keys(x, codes, discrete, priority)
    borrowed: dict[tuple, int] = {}
    component = np.empty(len(strata), dtype=np.int64)
    pooled = 0
    for s in range(len(strata)):
        if counts[s] >= min_stratum_rows:
            component[s] = add(np.flatnonzero(stratum_of_row == s))
            continue
        pooled += counts[s]
        component[s] = global_component
        for cols in backoff:  # coarser and coarser keys; the first big enough group wins
            key = (tuple(cols), tuple(strata[s, cols]))
            if key not in borrowed:
                rows = np.flatnonzero(np.all(codes[:, cols] == strata[s, cols], axis=1))
                borrowed[key] = add(rows) if len(rows) >= min_stratum_rows else -1
            if borrowed[key] >= 0:
                component[s] = borrowed[key]
                break

    return CopulaModel(
        columns=columns,
        numeric=numeric,
        numeric_dtypes={c: str(data[c].dtype) for c in numeric},
        integer_valued=integer_valued,
        discrete=described,
        strata_codes=strata.astype(np.int32),
        strata_probs=counts / counts.sum(),
        strata_component=component,
        quantiles=np.stack(grids),
        chol=np.stack(chols),
        n_fit_rows=len(data),
        block_rows=block_rows,
        pooled_share=float(pooled / len(data)),
        info={"grid_size": grid_size, "min_stratum_rows": min_stratum_rows, "seed": seed,
              "n_components": len(grids)},
    )
