"""Input checks shared by the diagnostics: arrays, treatment mask, row blocks."""

from __future__ import annotations

import numpy as np

BLOCK_ROWS = 1 << 16  # rows per block of the one-pass accumulations (bounds temporary memory)


def as_matrix(X: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """X as a 2-d float64 array (no copy if it already is one); names must match its columns."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-d (n, p), got shape {X.shape}")
    if names is not None and len(names) != X.shape[1]:
        raise ValueError(f"{len(names)} names for {X.shape[1]} columns of X")
    return X


def as_treated(t: np.ndarray, n: int) -> np.ndarray:
    """The treatment as a bool mask of length n; both arms must be non-empty."""
    t = np.asarray(t)
    if t.shape != (n,):
        raise ValueError(f"t must have shape ({n},), got {t.shape}")
    if t.dtype != np.bool_:
        if not ((t == 0) | (t == 1)).all():
            raise ValueError("t must be bool or 0/1")
        t = t != 0
    n1 = int(np.count_nonzero(t))
    if n1 == 0 or n1 == n:
        raise ValueError("both treatment arms must have rows")
    return t


def as_vector(v: np.ndarray, n: int, what: str) -> np.ndarray:
    """A float64 vector of length n."""
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {v.shape}")
    return v


def as_propensity(propensity: np.ndarray) -> np.ndarray:
    """The propensity as a 1-d float64 array."""
    e = np.asarray(propensity, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"propensity must be 1-d, got shape {e.shape}")
    return e


def row_blocks(n: int):
    """(start, stop) of consecutive row blocks of at most BLOCK_ROWS rows."""
    for start in range(0, n, BLOCK_ROWS):
        yield start, min(start + BLOCK_ROWS, n)
