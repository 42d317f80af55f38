"""Sampling twins from a fitted :class:`~.copula.CopulaModel`, in chunks.

Sampling is defined per fixed block of rows with a seed derived from ``(seed, block index)``,
so any chunking of the rows gives exactly the same twins as one-shot sampling; the latent
correlation step avoids BLAS, so the bits do not depend on the thread count or the process
either (chunks drawn by a Ray fan-out are the same as chunks drawn here).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from e2i_pipelines.analytics.twins.copula import TWIN_ID, CopulaModel
from e2i_pipelines.core.fanout import LocalMapper, Mapper


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
