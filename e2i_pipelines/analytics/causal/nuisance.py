"""LightGBM nuisance models on features binned once.

LightGBM's bin edges depend only on the covariates, so the covariates of a frame are binned
once (a constructed :class:`lightgbm.Dataset` over all rows) and every nuisance model of every
cross-fitting fold trains on a ``subset()`` of it with its own label, as ``lightgbm.cv`` does.
The binned frame is cached per covariate frame (by identity, dropped with the frame), so a
refit that changes only the treatment or the outcome (the simulated unobserved confounder)
bins nothing, and a frame registered with :func:`extend` (the random common cause: the
covariates plus new columns) bins only the new columns and adds them to a copy of the
cached bins (``Dataset.add_features_from``). A model fitted again on the same bins, rows,
label and objective is not trained again: its predictions are kept in a small per-frame memo
(:data:`MEMO_VALUES`), which the unobserved-confounder refits hit for their propensity.

Predictions use the raw covariates (categoricals as their category codes, missing as NaN),
the values the bins were built from.
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

DATASET_KEYS = ("min_data_in_leaf", "num_threads", "seed", "verbose", "max_bin")
"""Training parameters that also shape the binned Dataset (kept equal on both)."""
MEMO_VALUES = 3
"""Fitted predictions kept per binned frame, in multiples of its rows (0 disables reuse)."""
PREDICT_ROWS = 65_536
"""Test rows scored per block (their float64 covariate matrix: 15 MiB at 30 columns)."""


def lgb_params(trees: int, n_jobs: int, seed: int) -> dict[str, Any]:
    """LightGBM's native parameters of our nuisances (the sklearn wrappers' equivalents).

    ``force_row_wise`` skips LightGBM's per-model timing test of both histogram layouts and
    takes the one that is faster single-threaded on 30 dense columns (4-12 % less CPU than
    column-wise at 320k rows; the same trees, bit for bit)."""
    return {"num_iterations": trees, "learning_rate": 0.1, "num_leaves": 31,
            "min_data_in_leaf": 50, "num_threads": n_jobs, "seed": seed, "verbose": -1,
            "max_bin": 255, "force_row_wise": True}


def _dataset_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in DATASET_KEYS}


def tree_matrix(frame: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
    """The covariates as a float64 matrix: categoricals as category codes (NaN if missing)."""
    n = len(frame) if rows is None else len(rows)
    out = np.empty((n, frame.shape[1]), dtype=np.float64)
    for j, col in enumerate(frame.columns):
        values = frame[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes = values.cat.codes.to_numpy()
            codes = codes if rows is None else codes[rows]
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            v = values.to_numpy(dtype=np.float64)
            out[:, j] = v if rows is None else v[rows]
    return out


def binning_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The covariates to bin: the frame's own float64 block when it is one (a view, no copy:
    LightGBM reads a column-major matrix as such), else :func:`tree_matrix`."""
    if (frame.dtypes == np.float64).all():  # no categorical, no int/bool column
        values = frame.to_numpy(dtype=np.float64, copy=False)
        if values.flags.f_contiguous or values.flags.c_contiguous:
            return values
    return tree_matrix(frame)


def categorical_positions(frame: pd.DataFrame) -> list[int]:
    return [j for j, c in enumerate(frame.columns)
            if isinstance(frame[c].dtype, pd.CategoricalDtype)]


@dataclass
class Binned:
    """A constructed LightGBM Dataset over every row of a covariate frame."""

    dataset: Any  # lightgbm.Dataset, constructed, label zeros
    columns: list[str]
    params: dict[str, Any]
    memo: dict[bytes, np.ndarray] = field(default_factory=dict)  # fitted predictions

    def recall(self, key: bytes) -> np.ndarray | None:
        """The predictions kept under ``key`` (marked as the most recently used), or None."""
        hit = self.memo.pop(key, None)
        if hit is not None:
            self.memo[key] = hit
        return hit

    def remember(self, key: bytes, predictions: np.ndarray) -> None:
        """Keep ``predictions`` under ``key``; the least recently used go beyond the budget."""
        budget = MEMO_VALUES * self.n_rows
        if predictions.size > budget:
            return
        self.memo[key] = predictions
        while sum(p.size for p in self.memo.values()) > budget:
            del self.memo[next(iter(self.memo))]

    @property
    def n_rows(self) -> int:
        return self.dataset.num_data()

    def labelled(self, rows: np.ndarray, label: np.ndarray) -> Any:
        """The binned ``rows`` (sorted indices) with ``label`` (one value per row).

        Built with ``num_threads`` 1: LightGBM's C API sets a process-wide thread count from
        each call's params, so a subset built with the parent's n threads while another
        model trains on one thread (the pool of :class:`TreeNuisance`) changes that model's
        thread count mid-training (a segfault in a 1M-row dml run)."""
        part = self.dataset.subset(rows, params={**self.dataset.params, "num_threads": 1})
        part = part.construct()
        part.set_label(np.asarray(label, dtype=np.float64))
        return part


def bin_frame(frame: pd.DataFrame, params: dict[str, Any], reference: Any = None) -> Any:
    """A constructed Dataset of ``frame``'s covariates (bins of ``reference`` if given)."""
    import lightgbm as lgb

    ds = lgb.Dataset(binning_matrix(frame), label=np.zeros(len(frame)),
                     feature_name=[str(c) for c in frame.columns],
                     categorical_feature=categorical_positions(frame) or "auto",
                     params=_dataset_params(params), reference=reference,
                     free_raw_data=True)
    return ds.construct()


_CACHE: dict[tuple[int, tuple], Binned] = {}
_EXTENDS: dict[int, tuple[weakref.ref, list[str]]] = {}


def _forget(key_id: int) -> None:
    for key in [k for k in _CACHE if k[0] == key_id]:
        del _CACHE[key]
    _EXTENDS.pop(key_id, None)


def _remember(frame: pd.DataFrame) -> None:
    if not any(k[0] == id(frame) for k in _CACHE) and id(frame) not in _EXTENDS:
        weakref.finalize(frame, _forget, id(frame))


def extend(derived: pd.DataFrame, base: pd.DataFrame, added: list[str]) -> None:
    """Record that ``derived`` is ``base``'s columns followed by the columns ``added``."""
    if list(derived.columns) != [*base.columns, *added] or len(derived) != len(base):
        raise ValueError("derived frame must be the base columns followed by the added ones")
    _remember(derived)
    _EXTENDS[id(derived)] = (weakref.ref(base), list(added))


def binned(frame: pd.DataFrame, params: dict[str, Any]) -> Binned:
    """The cached binned covariates of ``frame`` (built on first use)."""
    key = (id(frame), tuple(sorted(_dataset_params(params).items())))
    hit = _CACHE.get(key)
    if hit is not None and hit.columns == [str(c) for c in frame.columns] \
            and hit.n_rows == len(frame):
        return hit
    ds = None
    link = _EXTENDS.get(id(frame))
    base = link[0]() if link else None
    if base is not None:
        ds = _extended(binned(base, params), frame[link[1]], params)
    if ds is None:
        ds = bin_frame(frame, params)
    _remember(frame)
    out = Binned(ds, [str(c) for c in frame.columns], params)
    _CACHE[key] = out
    return out


def _extended(base: Binned, added: pd.DataFrame, params: dict[str, Any]) -> Any:
    """A copy of ``base``'s bins with ``added``'s columns binned and appended."""
    every = np.arange(base.n_rows, dtype=np.int32)
    copy = base.dataset.subset(every).construct()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LightGBM warns that raw data was freed: intended
        copy.add_features_from(bin_frame(added, params))
    return copy


def predictor(booster: Any, objective: str) -> Callable[[np.ndarray], np.ndarray]:
    """``booster.predict`` on one thread, as a function of the covariate rows, scored by the
    QuickScorer of :mod:`~e2i_pipelines.analytics.explain.tree_scorer` (the same leaf values
    summed in the same order, and LightGBM's sigmoid for ``binary``: bit-identical, ~4x less
    CPU at 200k rows x 100 trees); LightGBM's own predict for models the scorer does not take.
    The scorer is built once, so the rows can come in blocks."""
    from e2i_pipelines.analytics.explain.model import UnsupportedModelError, flatten_booster
    from e2i_pipelines.analytics.explain.tree_scorer import QuickScorer

    try:
        scorer = QuickScorer(flatten_booster(booster))
    except UnsupportedModelError:
        return lambda X: booster.predict(X, num_threads=1)
    if objective == "binary":
        return lambda X: 1.0 / (1.0 + np.exp(-scorer.raw(X, n_threads=1)))
    return lambda X: scorer.raw(X, n_threads=1)


@dataclass(frozen=True)
class Task:
    """One nuisance model: train on ``rows`` with ``label`` (``objective``), predict ``test``."""

    rows: np.ndarray  # sorted training row indices
    label: np.ndarray  # one value per training row
    objective: str  # "binary" or "regression"
    test: np.ndarray  # row indices to predict


def _digest(*arrays: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(memoryview(a).cast("B"))
    return h.digest()


class TreeNuisance:
    """Fit-and-predict of LightGBM nuisances on the binned covariates of one frame.

    With ``num_threads`` n > 1 the models of a batch (every fold's models at once, largest
    training set first) train concurrently, n at a time, each on one thread (LightGBM
    releases the GIL): on 2 cores that beats one model on two OpenMP threads, whose per-split
    barriers stall when the machine is shared. Each model is single-threaded and seeded, so
    its predictions depend only on its inputs: a model already fitted on the same bins, rows,
    label and objective (the propensity of the unobserved-confounder refits, whose treatment
    is the same for every outcome strength) is reused from a per-frame memo instead of being
    trained again.
    """

    def __init__(self, frame: pd.DataFrame, params: dict[str, Any]):
        self.frame = frame
        self.params = params
        self.bins = binned(frame, params)

    def _key(self, task: Task) -> bytes:
        label = np.asarray(task.label, dtype=np.float64)
        return _digest(task.rows, label, task.test) + \
            repr((task.objective, sorted(self.params.items()))).encode()

    def fit_predict(self, task: Task) -> np.ndarray:
        """Train ``task``'s model and predict its test rows (from the raw covariates)."""
        import lightgbm as lgb

        params = {**self.params, "objective": task.objective, "num_threads": 1}
        booster = lgb.train(params, self.bins.labelled(task.rows, task.label))
        score = predictor(booster, task.objective)
        out = np.empty(task.test.size)
        for start in range(0, task.test.size, PREDICT_ROWS):  # a block's matrix at a time
            rows = task.test[start:start + PREDICT_ROWS]
            out[start:start + rows.size] = score(tree_matrix(self.frame, rows))
        return out

    def run(self, tasks: list[Task]) -> list[np.ndarray]:
        """:meth:`fit_predict` of every task (memoised), in task order."""
        keys = [self._key(task) for task in tasks]
        out: list[np.ndarray | None] = [self.bins.recall(k) for k in keys]
        todo = sorted((i for i, hit in enumerate(out) if hit is None),
                      key=lambda i: -tasks[i].rows.size)
        workers = min(int(self.params["num_threads"]), len(todo))
        if workers <= 1:
            fitted = [self.fit_predict(tasks[i]) for i in todo]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                fitted = list(pool.map(lambda i: self.fit_predict(tasks[i]), todo))
        for i, pred in zip(todo, fitted, strict=True):
            out[i] = pred
            self.bins.remember(keys[i], pred)
        return out  # type: ignore[return-value]
