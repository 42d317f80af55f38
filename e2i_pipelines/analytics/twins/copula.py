"""Generative model of a population for digital twins: stratified Gaussian copulas.

Discrete columns (categoricals, binaries, the treatment) are modelled exactly by their joint
frequency table: every combination seen in the data is a *stratum*. Within a stratum the
numeric columns follow a Gaussian copula with empirical marginals, stored as a fixed grid of
quantiles so sampling is a vectorised interpolation. Conditioning on the stratum keeps the
dependence between discrete and numeric columns (a naive copula over 0/1 columns attenuates
it). Strata with too few rows borrow the copula of a coarser key: the least informative
discrete columns are dropped one by one, ``priority`` columns (the treatment) last of all.

Sampling is defined per fixed block of rows with a seed derived from ``(seed, block index)``,
so any chunking of the rows gives exactly the same twins as one-shot sampling; the latent
correlation step avoids BLAS, so the bits do not depend on the thread count or the process
either (chunks drawn by a Ray fan-out are the same as chunks drawn here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numba import njit
from scipy import special

from e2i_pipelines.core.budget import single_threaded_blas
from e2i_pipelines.core.fanout import LocalMapper, Mapper

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


def _block_rng(seed: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(block)]))


def _interpolate(u: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Quantile function on the uniform grid: u (m, p) in [0, 1] -> values (m, p).

    With :func:`_correlate` and ``special.ndtr``: the numpy reference of
    :func:`_fill_components` (tests compare them)."""
    g = grid.shape[1]
    pos = u * (g - 1)
    lo = np.minimum(pos.astype(np.int64), g - 2)
    frac = pos - lo
    cols = np.arange(grid.shape[0])
    left = grid[cols, lo]
    return left + frac * (grid[cols, lo + 1] - left)


def _correlate(z: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """``z @ chol.T`` summed term by term in a fixed order with elementwise ufuncs, not BLAS
    (whose last bit depends on its thread count): the twins are the same bits wherever and
    on however many threads they are drawn (e.g. a Ray worker with OMP_NUM_THREADS=1)."""
    zt = np.ascontiguousarray(z.T)
    out = np.zeros_like(zt)
    for j in range(chol.shape[0]):
        for k in np.flatnonzero(chol[j]):  # lower triangular: skip the exact zeros
            out[j] += zt[k] * chol[j, k]
    return out.T


@njit(cache=True, nogil=True)
def _fill_components(z: np.ndarray, starts: np.ndarray, comps: np.ndarray, chol: np.ndarray,
                     grid: np.ndarray, out: np.ndarray, dest: np.ndarray) -> None:
    """``out[dest[i]] = quantile(grid[c], ndtr(z[i] @ chol[c].T))`` for the rows
    ``starts[s] <= i < starts[s + 1]`` of each component ``c = comps[s]``, in one call
    (``dest``: the output row of each row of ``z``, so a permutation costs no extra copy).

    The latent product is summed term by term in a fixed order (no BLAS), as
    :func:`_correlate`, so the bits do not depend on threads or processes; ndtr is cephes'
    formula on libm's erf/erfc; the interpolation is :func:`_interpolate`'s. Per component,
    all latent uniforms first, then the lookups column by column (independent loads into
    one quantile row: the memory latency overlaps), then one scatter of whole rows. Releases
    the GIL (chunks are drawn on threads).
    """
    m, p = z.shape
    g = grid.shape[2]
    u = np.empty((m, p))
    for s in range(comps.shape[0]):
        c = comps[s]
        for i in range(starts[s], starts[s + 1]):
            for j in range(p):
                acc = 0.0
                for k in range(j + 1):
                    w = chol[c, j, k]
                    if w != 0.0:
                        acc += z[i, k] * w
                x = acc * 0.7071067811865476
                if abs(x) < 0.7071067811865476:
                    v = 0.5 + 0.5 * math.erf(x)
                else:
                    v = 0.5 * math.erfc(abs(x))
                    if x > 0:
                        v = 1.0 - v
                u[i, j] = v
        for j in range(p):
            row = grid[c, j]
            for i in range(starts[s], starts[s + 1]):
                pos = u[i, j] * (g - 1)
                lo = min(int(pos), g - 2)
                frac = pos - lo
                left = row[lo]
                u[i, j] = left + frac * (row[lo + 1] - left)
    for i in range(m):
        r = dest[i]
        for j in range(p):
            out[r, j] = u[i, j]


def _sample_block(model: CopulaModel, seed: int, block: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Numeric values (rows, p) and stratum indices (rows,) of one block.

    Stratum counts are multinomial; each component fills a contiguous segment of draws; one
    random permutation then makes the row order exchangeable (any prefix is a random sample):
    draw ``perm[i]`` is row ``i``.
    """
    rng = _block_rng(seed, block)
    counts = rng.multinomial(rows, model.strata_probs)
    stratum = np.repeat(np.arange(model.n_strata), counts)
    p = len(model.numeric)
    values = np.empty((rows, p))
    if p:
        comp = model.strata_component[stratum]
        order = np.argsort(comp, kind="stable")
        stratum = stratum[order]
        comp_counts = np.bincount(comp, minlength=len(model.chol))
        z = rng.standard_normal((rows, p))
    perm = rng.permutation(rows)
    if p:
        dest = np.empty(rows, dtype=np.int64)
        dest[perm] = np.arange(rows)
        comps = np.flatnonzero(comp_counts)
        starts = np.concatenate([[0], np.cumsum(comp_counts[comps])])
        _fill_components(z, starts, comps, model.chol, model.quantiles, values, dest)
    return values, stratum[perm]


def _to_frame(model: CopulaModel, values: np.ndarray, stratum: np.ndarray, start: int) -> pd.DataFrame:
    out: dict[str, Any] = {TWIN_ID: np.arange(start, start + len(stratum), dtype=np.int64)}
    for j, c in enumerate(model.numeric):
        col = values[:, j]
        if c in model.integer_valued:
            col = np.rint(col)
        out[c] = col.astype(model.numeric_dtypes[c], copy=False)
    for j, d in enumerate(model.discrete):
        codes = model.strata_codes[stratum, j]
        if d.kind == "category":
            out[d.name] = pd.Categorical.from_codes(codes, categories=d.categories)
        else:
            out[d.name] = np.asarray(d.levels, dtype=d.kind)[codes]
    return pd.DataFrame(out)[[TWIN_ID, *model.columns]]


def sample_range(model: CopulaModel, start: int, stop: int, seed: int) -> pd.DataFrame:
    """Twins ``start <= twin_id < stop`` of the population drawn with ``seed``."""
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
    b = model.block_rows
    parts_v, parts_s = [], []
    for block in range(start // b, -(-stop // b)):
        lo, hi = block * b, (block + 1) * b
        values, stratum = _sample_block(model, seed, block, b)
        a, z = max(start, lo) - lo, min(stop, hi) - lo
        parts_v.append(values[a:z])
        parts_s.append(stratum[a:z])
    if not parts_v:
        return _to_frame(model, np.empty((0, len(model.numeric))), np.empty(0, np.int64), start)
    return _to_frame(model, np.concatenate(parts_v), np.concatenate(parts_s), start)


def sample(model: CopulaModel, n: int, seed: int) -> pd.DataFrame:
    """All ``n`` twins at once (same values as any chunked iteration)."""
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    return sample_range(model, 0, n, seed)


def chunk_bounds(model: CopulaModel, n: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Chunk boundaries aligned to the model's random blocks (so no block is drawn twice)."""
    if n <= 0 or chunk_rows <= 0:
        raise ValueError(f"n and chunk_rows must be > 0, got n={n}, chunk_rows={chunk_rows}")
    step = max(model.block_rows, chunk_rows // model.block_rows * model.block_rows)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def draw_chunk(state: tuple[CopulaModel, int], bounds: tuple[int, int]) -> pd.DataFrame:
    """Twins ``bounds[0] <= twin_id < bounds[1]`` of ``state = (model, seed)`` (a mapper's
    per-chunk function: the same rows wherever it runs)."""
    model, seed = state
    return sample_range(model, bounds[0], bounds[1], seed)


def iter_chunks(model: CopulaModel, n: int, chunk_rows: int, seed: int,
                workers: int = 1, mapper: Mapper | None = None) -> Iterator[pd.DataFrame]:
    """Twins in chunks of about ``chunk_rows`` (memory is bounded by the chunk, not ``n``).

    Chunks are drawn by ``mapper`` (default: ``workers`` threads here; numpy and scipy release
    the GIL, and at most ``workers`` chunks wait), e.g. a Ray fan-out. The chunks are the same
    either way: each random block has its own seed.
    """
    mapper = mapper or LocalMapper(workers)
    for _, chunk in mapper.map(draw_chunk, (model, seed), chunk_bounds(model, n, chunk_rows)):
        yield chunk


@single_threaded_blas()
def write_twins(
    model: CopulaModel, n: int, path: str | Path, *, chunk_rows: int, seed: int,
    on_chunk: Callable[[pd.DataFrame], None] | None = None, workers: int = 1,
    mapper: Mapper | None = None,
) -> int:
    """Stream ``n`` twins to one Parquet file (a row group per chunk); returns rows written.

    ``workers`` threads (or ``mapper``) draw the next chunks while this one is written (see
    ``iter_chunks``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    written = 0
    try:
        for chunk in iter_chunks(model, n, chunk_rows, seed, workers, mapper):
            if writer is None:  # dictionaries only for the discrete columns: floats rarely repeat
                schema = pa.Schema.from_pandas(chunk, preserve_index=False)
                writer = pq.ParquetWriter(str(path), schema, compression="lz4",
                                          use_dictionary=model.discrete_names)
            writer.write_table(_arrow_table(chunk, schema))
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
    finally:
        if writer is not None:
            writer.close()
    return written


def _arrow_table(chunk: pd.DataFrame, schema: Any) -> Any:
    """``chunk`` as an Arrow table of ``schema`` (``pa.Table.from_pandas``'s table): numeric
    columns zero-copy and without its NaN-as-null scan (twins have no missing values)."""
    import pyarrow as pa

    arrays = []
    for f in schema:
        col = chunk[f.name]
        if isinstance(col.dtype, pd.CategoricalDtype) and pa.types.is_dictionary(f.type):
            arrays.append(pa.DictionaryArray.from_arrays(
                pa.array(col.cat.codes.to_numpy(), type=f.type.index_type),
                pa.array(col.cat.categories.to_numpy(), type=f.type.value_type)))
        elif col.dtype.kind in "biuf":
            arrays.append(pa.array(col.to_numpy(), type=f.type, from_pandas=False))
        else:
            arrays.append(pa.Array.from_pandas(col, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def sample_parquet_rows(path: str | Path, columns: list[str], n_rows: int, seed: int,
                        batch_rows: int = 500_000) -> pd.DataFrame:
    """About ``n_rows`` random rows of a Parquet file, read batch by batch (bounded memory)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; available: {pf.schema_arrow.names}")
    total = pf.metadata.num_rows
    if total <= n_rows:
        return pf.read(columns=columns).to_pandas()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    keep_share = min(1.0, 1.2 * n_rows / total)  # oversample a little, trim exactly below
    parts = []
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        take = np.flatnonzero(rng.random(batch.num_rows) < keep_share)
        parts.append(batch.take(take).to_pandas())
    frame = pd.concat(parts, ignore_index=True)
    if len(frame) > n_rows:
        frame = frame.iloc[np.sort(rng.choice(len(frame), n_rows, replace=False))]
    return frame.reset_index(drop=True)


def iter_parquet_chunks(path: str | Path, chunk_rows: int,
                        columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Read a twins file back chunk by chunk.

    A row group of at most ``chunk_rows`` rows (the chunks ``write_twins`` wrote) is one
    chunk; larger ones are split. Batches straddling row groups would cost a copy each (3x
    the CPU of the read).
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    for i in range(pf.num_row_groups):
        if pf.metadata.row_group(i).num_rows <= chunk_rows:
            yield pf.read_row_group(i, columns=columns).to_pandas()
            continue
        for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[i], columns=columns):
            yield batch.to_pandas()


@dataclass(frozen=True)
class TwinsRef:
    """Digital twins on disk (one Parquet file) and how they were made."""

    path: str
    n_rows: int
    columns: list[str]  # modelled columns (the file also has ``twin_id``)
    treatment: str
    model_path: str  # pickled CopulaModel
    seed: int
    fidelity: dict[str, Any] = field(default_factory=dict)
    source_dataset: str | None = None

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.path, columns=columns)
