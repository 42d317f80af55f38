"""Fast exact tree-ensemble scoring by leaf bitvectors (QuickScorer, Lucchese et al. 2015).

Leaves of a tree are numbered left to right; an internal node that sends a row right rules
out every leaf of its left subtree, and the row's exit leaf is the leftmost leaf left. So a
row needs no pointer chasing: per feature, walk that feature's split thresholds in ascending
order while ``threshold < x`` and AND each node's mask into its tree's bitvector; the exit
leaf of every tree is then the lowest set bit. Splits the sorted walk cannot decide (NaN
values, zero-as-missing, categorical bitsets) are decided per row by LightGBM's own rules
(``_goes_left``, shared with the TreeSHAP kernels).

A *pinned* feature (the treatment) is left out of the row walk: its nodes' masks for each
pinned value are ANDed in at the end, so both arms of ``f(x, 1) - f(x, 0)`` cost one walk.
Trees with more than 64 leaves raise :class:`UnsupportedModelError` (callers fall back).

When they fit in ``table_bytes``, *binned tables* replace the walk: every decision on a
feature is constant between consecutive breakpoints of that feature (its thresholds, the
zero band of zero-as-missing splits, category codes, NaN), so each row is first binned per
feature, then for each tree the bitvector is the AND of one precomputed entry per feature
the tree uses (tree-outer, rows-inner within a block of rows: a tree's tables stay in
cache). The entries are computed by LightGBM's own rule on a representative value per bin,
and the leaf values are summed in the same order, so both paths give the same bits.

When most trees use most features, the *wide* form of the same tables is faster: a row per
(feature, bin) holding every tree's mask (all-ones for trees that do not split on the
feature), in uint32 when every tree has at most 32 leaves. A row's bitvectors are then the
AND of one contiguous table row per feature: vector loads and ANDs instead of one gather per
(tree, feature).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

from e2i_pipelines.analytics.explain.kernels import _ZERO, _goes_left, set_threads
from e2i_pipelines.analytics.explain.model import (
    MISSING_TYPES,
    NUMERICAL,
    FlatEnsemble,
    UnsupportedModelError,
)

MAX_LEAVES = 64  # one uint64 bitvector per tree
_BLOCK = 512  # rows per parallel block
_BIN_BLOCK = 256  # rows per block of the binned kernel (their bins stay in L1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_CHECKPOINT = 16  # sorted nodes per precomputed prefix AND (doubled until the table fits)
DEFAULT_TABLE_BYTES = 256 * 2**20
DEFAULT_WIDE_BYTES = 16 * 2**20  # the wide tables stay within a last-level cache
_WIDE_DENSITY = 0.125  # used (tree, feature) cells per cell below which gathers win


def _tree_layout(flat: FlatEnsemble, roots: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray, int]:
    """Per node: (tree index, AND-mask when the row goes right); per tree: leaves in order;
    the most leaves of any tree."""
    node_tree = np.full(len(flat.node_feature), -1, dtype=np.int32)
    node_mask = np.zeros(len(flat.node_feature), dtype=np.uint64)
    leaf_ids = np.zeros((len(roots), MAX_LEAVES), dtype=np.int32)
    most = 0
    for t, root in enumerate(roots):
        leaves: list[int] = []

        def walk(nd: int, t: int = t, leaves: list[int] = leaves) -> tuple[int, int]:
            """In-order walk; returns the (first, last) local leaf numbers below ``nd``."""
            if nd < 0:
                leaves.append(~nd)
                return len(leaves) - 1, len(leaves) - 1
            first, mid = walk(int(flat.node_left[nd]))
            _, last = walk(int(flat.node_right[nd]))
            node_tree[nd] = t
            left_bits = ((1 << (mid + 1)) - 1) ^ ((1 << first) - 1)
            node_mask[nd] = np.uint64(~left_bits & (2**64 - 1))
            return first, last

        walk(int(root))
        if len(leaves) > MAX_LEAVES:
            raise UnsupportedModelError(f"a tree has {len(leaves)} leaves; the bitvector "
                                        f"scorer handles at most {MAX_LEAVES}")
        leaf_ids[t, : len(leaves)] = leaves
        most = max(most, len(leaves))
    return node_tree, node_mask, leaf_ids, most


# columns of _BinnedTables.feat: column of X, kind (0 numeric, 1 categorical), offset and
# count of its breakpoints, number of codes, offset and cells of its grid, linear steps
_COL, _KIND, _BP, _NBP, _CODES, _GRID, _CELLS, _STEPS = range(8)
_MAX_STEPS = 8  # linear steps per grid cell; more: a binary search for that feature
_MAX_CELLS = 1 << 13


def _bin_grid(bp: np.ndarray) -> tuple[float, float, np.ndarray, int]:
    """(lo, scale, first bin per cell, steps): a uniform grid over the breakpoints ``bp``.

    The bin of ``x`` in cell ``c = int((x - lo) * scale)`` lies within ``steps`` steps
    above ``cells[c]`` (one cell of slack each side for rounding); ``steps`` is -1 when no
    grid of at most ``_MAX_CELLS`` cells achieves ``_MAX_STEPS`` (binary search instead).
    """
    if len(bp) <= _MAX_STEPS:
        return 0.0, 0.0, np.zeros(1, dtype=np.int32), len(bp)
    span = float(bp[-1] - bp[0])
    n_cells = 1 << int(np.ceil(np.log2(4 * len(bp))))
    while np.isfinite(span) and span > 0 and n_cells <= _MAX_CELLS:
        scale = n_cells / span
        with np.errstate(over="ignore", invalid="ignore"):
            edges = bp[0] + np.arange(-1, n_cells + 2) / scale  # edges[c + 1] = left of cell c
        below = np.searchsorted(bp, edges, side="left")  # breakpoints < edge
        first = below[:-3].copy()
        first[0] = 0
        steps = int((below[3:] - first).max())
        if steps <= _MAX_STEPS and np.isfinite(scale):
            return float(bp[0]), float(scale), first.astype(np.int32), steps
        n_cells *= 2
    return 0.0, 0.0, np.zeros(1, dtype=np.int32), -1


@dataclass(frozen=True)
class _BinnedTables:
    """Per feature its bin rule; per (tree, feature used by it) a mask per bin.

    Feature ``i`` (row ``feat[i]``, columns named by ``_COL``...): a numeric feature's bin is
    ``searchsorted(bp, x)`` over its ``m`` breakpoints (``m`` above the last, ``m + 1`` for
    NaN), found from a uniform grid (:func:`_bin_grid`); a categorical one's is the code
    ``int(x)`` for ``0 <= x < n_codes``, else ``n_codes``. Tree ``t`` ANDs
    ``table[entry_offset[k] + bin of entry_feature[k]]`` for ``k`` in
    ``tree_start[t]:tree_start[t + 1]``.
    """

    feat: np.ndarray  # (features, 8) int64
    grid_lo_scale: np.ndarray  # (features, 2) float64
    breakpoints: np.ndarray  # per feature its breakpoints, then +inf
    grid: np.ndarray  # int32 first bin per cell, per feature
    tree_start: np.ndarray
    entry_feature: np.ndarray
    entry_offset: np.ndarray
    table: np.ndarray
    wide_base: np.ndarray | None = None  # first row of each feature in ``wide``
    wide: np.ndarray | None = None  # (bins of all features, trees) uint32/uint64 masks

    @classmethod
    def build(cls, scorer: QuickScorer, select: np.ndarray, table_bytes: int,
              wide_bytes: int = DEFAULT_WIDE_BYTES) -> _BinnedTables | None:
        """Tables of the ``select`` nodes, or None when they exceed ``table_bytes``."""
        f = scorer.flat
        n_trees = len(scorer.roots)
        feats = np.unique(f.node_feature[select])
        feat = np.zeros((len(feats), 8), dtype=np.int64)
        lo_scale = np.zeros((len(feats), 2))
        reps, bps, grids = [], [], []
        n_bp = n_grid = 0
        for i, j in enumerate(feats):
            nodes = np.flatnonzero(select & (f.node_feature == j))
            kind = f.node_kind[nodes]
            if (kind != kind[0]).any():
                return None  # numeric and categorical splits on one column: walk instead
            bp, grid, steps, n_codes = np.zeros(0), np.zeros(1, dtype=np.int32), 0, 0
            if kind[0] == NUMERICAL:
                bp = np.unique(f.node_threshold[nodes])
                if (f.node_missing[nodes] == MISSING_TYPES["Zero"]).any():  # |x| <= kZero
                    bp = np.union1d(bp, [np.nextafter(-_ZERO, -np.inf), _ZERO])
                reps.append(np.concatenate([bp, [np.inf, np.nan]]))
                lo, scale, grid, steps = _bin_grid(bp)
                lo_scale[i] = lo, scale
            else:
                n_codes = 32 * int(f.node_cat_len[nodes].max())
                reps.append(np.append(np.arange(n_codes, dtype=np.float64), np.nan))
            feat[i] = (j, int(kind[0] != NUMERICAL), n_bp, len(bp), n_codes, n_grid,
                       len(grid), steps)
            bps.append(np.append(bp, np.inf))
            grids.append(grid)
            n_bp += len(bp) + 1
            n_grid += len(grid)
        # per feature, which trees split on it (and so get an entry)
        uses = np.zeros((len(feats), n_trees), dtype=bool)
        for i, j in enumerate(feats):
            uses[i, np.unique(scorer.node_tree[select & (f.node_feature == j)])] = True
        if int((uses.sum(axis=1) * np.array([len(r) for r in reps])).sum()) * 8 > table_bytes:
            return None
        masks = [scorer._right_masks(r, np.flatnonzero(select & (f.node_feature == j)))
                 for r, j in zip(reps, feats, strict=True)]  # (bins, trees) per feature
        tree_start = np.zeros(n_trees + 1, dtype=np.int64)
        entry_feature, entry_offset, parts, offset = [], [], [], 0
        for t in range(n_trees):
            for i in np.flatnonzero(uses[:, t]):
                entry_feature.append(i)
                entry_offset.append(offset)
                parts.append(masks[i][:, t])
                offset += len(reps[i])
            tree_start[t + 1] = len(entry_feature)
        wide_base, wide = _wide_tables(masks, uses, scorer.max_leaves, wide_bytes)
        return cls(
            feat=feat, grid_lo_scale=lo_scale,
            breakpoints=np.concatenate([np.zeros(0), *bps]),
            grid=np.concatenate([np.zeros(0, np.int32), *grids]),
            tree_start=tree_start,
            entry_feature=np.asarray(entry_feature, dtype=np.int64),
            entry_offset=np.asarray(entry_offset, dtype=np.int64),
            table=np.ascontiguousarray(np.concatenate([np.zeros(0, np.uint64), *parts]),
                                       dtype=np.uint64),
            wide_base=wide_base, wide=wide)


def _wide_tables(masks: list[np.ndarray], uses: np.ndarray, max_leaves: int,
                 wide_bytes: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Feature-major rows of every tree's mask per bin (see the module docstring), or
    (None, None) when they exceed ``wide_bytes`` or too few cells are used."""
    n_feats, n_trees = uses.shape
    if n_feats == 0 or n_trees == 0 or uses.mean() < _WIDE_DENSITY:
        return None, None
    dtype = np.uint32 if max_leaves <= 32 else np.uint64
    rows = sum(len(m) for m in masks)
    if rows * n_trees * np.dtype(dtype).itemsize > wide_bytes:
        return None, None
    base = np.zeros(n_feats, dtype=np.int64)
    wide = np.full((rows, n_trees), np.iinfo(dtype).max, dtype=dtype)
    row = 0
    for i, m in enumerate(masks):
        base[i] = row
        used = uses[i]
        wide[row:row + len(m), used] = m[:, used].astype(dtype)  # uint32: low bits = leaves
        row += len(m)
    return base, np.ascontiguousarray(wide)


class QuickScorer:
    """Sum of leaf values of selected trees, optionally with one feature pinned per arm."""

    def __init__(self, flat: FlatEnsemble, roots: np.ndarray | None = None,
                 pinned_feature: int = -1, table_bytes: int = DEFAULT_TABLE_BYTES,
                 wide_bytes: int = DEFAULT_WIDE_BYTES) -> None:
        self.flat = flat
        self.roots = np.asarray(flat.tree_root if roots is None else roots, dtype=np.int32)
        self.roots = self.roots[self.roots >= 0]
        self.pinned = int(pinned_feature)
        self.node_tree, self.node_mask, self.leaf_ids, self.max_leaves = _tree_layout(
            flat, self.roots)
        self.leaf_table = np.ascontiguousarray(flat.leaf_value[self.leaf_ids])  # (tree, leaf)
        node_tree, node_mask = self.node_tree, self.node_mask
        used = node_tree >= 0
        self.n_features = int(flat.n_features)
        f = flat
        sortable = used & (f.node_kind == NUMERICAL) & (f.node_missing != MISSING_TYPES["Zero"])
        sortable &= f.node_feature != self.pinned
        categorical = used & (f.node_kind != NUMERICAL) & (f.node_feature != self.pinned)
        special = used & ~sortable & ~categorical & (f.node_feature != self.pinned)
        self.cat_base, self.cat_codes, self.cat_table = self._category_tables(categorical)
        self.sorted_start, self.sorted_node = self._group(sortable, f.node_threshold)
        self.special_start, self.special_node = self._group(special, None)
        self.sorted_thr = f.node_threshold[self.sorted_node]
        self.sorted_tree = node_tree[self.sorted_node]
        self.sorted_mask = node_mask[self.sorted_node]
        self.stride = _CHECKPOINT
        n_sorted = len(self.sorted_node)
        while (n_sorted // self.stride + 1) * len(self.roots) * 8 > table_bytes \
                and self.stride <= n_sorted:
            self.stride *= 2
        self.cp_base, self.cp_table = self._checkpoints()
        self.special_tree = node_tree[self.special_node]
        self.special_mask = node_mask[self.special_node]
        self.pinned_nodes = np.flatnonzero(used & (f.node_feature == self.pinned))
        self.bins = _BinnedTables.build(self, used & (f.node_feature != self.pinned),
                                        table_bytes, wide_bytes)

    def _group(self, select: np.ndarray, key: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Selected nodes grouped by feature (by ``key`` within one); CSR start offsets."""
        nodes = np.flatnonzero(select)
        feats = self.flat.node_feature[nodes]
        order = np.lexsort((key[nodes], feats)) if key is not None else np.argsort(feats,
                                                                                   kind="stable")
        nodes = nodes[order].astype(np.int32)
        start = np.searchsorted(self.flat.node_feature[nodes], np.arange(self.n_features + 1))
        return start.astype(np.int64), nodes

    def _checkpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """Per feature, every ``stride`` sorted nodes: each tree's AND of the masks of the
        nodes so far, so a row applies whole runs of low thresholds with one vector AND."""
        base = np.zeros(self.n_features, dtype=np.int64)
        rows = [np.full((1, len(self.roots)), _ALL, dtype=np.uint64)]  # row 0: no-op
        n_rows = 1
        for j in range(self.n_features):
            s, e = int(self.sorted_start[j]), int(self.sorted_start[j + 1])
            base[j] = n_rows - 1  # checkpoint c of j is row base + c (c >= 1)
            state = np.full(len(self.roots), _ALL, dtype=np.uint64)
            for c in range(1, (e - s) // self.stride + 1):
                for k in range(s + (c - 1) * self.stride, s + c * self.stride):
                    state[self.sorted_tree[k]] &= self.sorted_mask[k]
                rows.append(state[None, :].copy())
                n_rows += 1
        return base, np.ascontiguousarray(np.concatenate(rows))

    def _category_tables(self, select: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per categorical feature, a row per code (+ one for NaN/out of range) holding each
        tree's AND of the masks of that feature's nodes sending the code right."""
        f = self.flat
        base = np.full(self.n_features, -1, dtype=np.int64)
        codes = np.zeros(self.n_features, dtype=np.int64)
        rows: list[np.ndarray] = []
        n_rows = 0
        for j in np.unique(f.node_feature[select]):
            nodes = np.flatnonzero(select & (f.node_feature == j))
            n_codes = 32 * int(f.node_cat_len[nodes].max())
            rows.append(self._right_masks(np.append(np.arange(n_codes, dtype=np.float64),
                                                    np.nan), nodes))
            base[j], codes[j] = n_rows, n_codes
            n_rows += n_codes + 1
        table = (np.concatenate(rows) if rows
                 else np.zeros((1, max(1, len(self.roots))), dtype=np.uint64))
        return base, codes, np.ascontiguousarray(table)

    def _right_masks(self, values: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """(len(values), trees): per value, each tree's AND of the masks of ``nodes`` that
        send the value right (LightGBM's decision rule)."""
        f = self.flat
        out = np.full((len(values), len(self.roots)), _ALL, dtype=np.uint64)
        _and_right_masks(np.asarray(values, dtype=np.float64), nodes.astype(np.int64),
                         self.node_tree, self.node_mask, f.node_threshold, f.node_kind,
                         f.node_default_left, f.node_missing, f.node_cat_offset,
                         f.node_cat_len, f.cat_words, out)
        return out

    def _pinned_masks(self, value: float) -> np.ndarray:
        """Per tree: AND of the pinned feature's nodes that send ``value`` right."""
        return self._right_masks(np.array([value]), self.pinned_nodes)[0]

    def _run(self, X: np.ndarray, arm1: np.ndarray, arm0: np.ndarray, diff: bool,
             n_threads: int) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.bins is None or not X.flags.f_contiguous:  # binned kernels read either order
            X = np.ascontiguousarray(X)
        out = np.zeros(X.shape[0])
        if X.shape[0] == 0 or len(self.roots) == 0:
            return out
        if X.shape[1] != self.n_features:
            raise ValueError(f"expected {self.n_features} columns, got {X.shape[1]}")
        set_threads(n_threads)
        if self.bins is not None and self.bins.wide is not None:
            b = self.bins
            kind = b.wide.dtype
            _wide_kernel(X, b.feat, b.grid_lo_scale, b.breakpoints, b.grid, b.wide_base, b.wide,
                         self.leaf_table, arm1.astype(kind), arm0.astype(kind), diff, out)
            return out
        if self.bins is not None:
            b = self.bins
            _binned_kernel(X, b.feat, b.grid_lo_scale, b.breakpoints, b.grid, b.tree_start,
                           b.entry_feature, b.entry_offset, b.table,
                           self.leaf_table, arm1, arm0, diff, out)
            return out
        f = self.flat
        _score_kernel(X, self.sorted_start, self.sorted_thr, self.sorted_tree, self.sorted_mask,
                      self.sorted_node, self.stride, self.cp_base, self.cp_table,
                      self.cat_base, self.cat_codes, self.cat_table, self.special_start,
                      self.special_node, self.special_tree, self.special_mask,
                      f.node_threshold, f.node_kind, f.node_default_left, f.node_missing,
                      f.node_cat_offset, f.node_cat_len, f.cat_words,
                      self.leaf_table, arm1, arm0, diff, out)
        return out

    def raw(self, X: np.ndarray, n_threads: int = 1) -> np.ndarray:
        """Sum of the selected trees' leaf values per row (no feature may be pinned)."""
        if self.pinned >= 0:
            raise ValueError("raw() needs an unpinned scorer; use difference()")
        ones = np.full(len(self.roots), _ALL, dtype=np.uint64)
        return self._run(X, ones, ones, False, n_threads)

    def difference(self, X: np.ndarray, value1: float, value0: float,
                   n_threads: int = 1) -> np.ndarray:
        """Per row: score with the pinned feature at ``value1`` minus at ``value0``."""
        if self.pinned < 0:
            raise ValueError("difference() needs a pinned feature")
        return self._run(X, self._pinned_masks(value1), self._pinned_masks(value0), True,
                         n_threads)


@njit(cache=True)
def _and_right_masks(values, nodes, node_tree, node_mask, node_threshold, node_kind,
                     node_default_left, node_missing, node_cat_offset, node_cat_len, cat_words,
                     out):
    """out[i, tree of nd] &= mask of nd, for every node nd in ``nodes`` sending values[i] right."""
    for i in range(values.shape[0]):
        for nd in nodes:
            if not _goes_left(values[i], nd, node_threshold, node_kind, node_default_left,
                              node_missing, node_cat_offset, node_cat_len, cat_words):
                out[i, node_tree[nd]] &= node_mask[nd]


@njit(cache=True, inline="always")
def _count_below(values, lo, hi, x):
    """First k in [lo, hi) with values[k] >= x (values ascending): ``searchsorted`` 'left'."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(parallel=True, cache=True, nogil=True)
def _score_kernel(X, sorted_start, sorted_thr, sorted_tree, sorted_mask, sorted_node,
                  stride, cp_base, cp_table, cat_base, cat_codes, cat_table, special_start,
                  special_node, special_tree, special_mask, node_threshold, node_kind,
                  node_default_left, node_missing, node_cat_offset, node_cat_len, cat_words,
                  leaf_table, arm1, arm0, diff, out):
    """out[r] = sum_t value(exit leaf with arm1) [- value(exit leaf with arm0) if diff]."""
    n, p = X.shape
    n_trees = arm1.shape[0]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        v = np.empty(n_trees, dtype=np.uint64)
        for r in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            for t in range(n_trees):
                v[t] = _ALL
            for j in range(p):
                x = X[r, j]
                first, stop = sorted_start[j], sorted_start[j + 1]
                if np.isnan(x):  # NaN: each node's missing rule decides
                    for k in range(first, stop):
                        nd = sorted_node[k]
                        if not _goes_left(x, nd, node_threshold, node_kind, node_default_left,
                                          node_missing, node_cat_offset, node_cat_len,
                                          cat_words):
                            v[sorted_tree[k]] &= sorted_mask[k]
                elif stop > first:
                    kstar = _count_below(sorted_thr, first, stop, x)  # thr < x before kstar
                    c = (kstar - first) // stride
                    if c > 0:
                        row = cp_base[j] + c
                        for t in range(n_trees):
                            v[t] &= cp_table[row, t]
                    for k in range(first + c * stride, kstar):
                        v[sorted_tree[k]] &= sorted_mask[k]
                if cat_base[j] >= 0:  # categorical: one precomputed row of masks per code
                    c = cat_codes[j]
                    if x >= 0.0 and x < c:
                        c = np.int64(x)
                    row = cat_base[j] + c
                    for t in range(n_trees):
                        v[t] &= cat_table[row, t]
                for k in range(special_start[j], special_start[j + 1]):
                    nd = special_node[k]
                    if not _goes_left(x, nd, node_threshold, node_kind, node_default_left,
                                      node_missing, node_cat_offset, node_cat_len, cat_words):
                        v[special_tree[k]] &= special_mask[k]
            acc = 0.0
            for t in range(n_trees):
                acc += leaf_table[t, trailing_zeros(v[t] & arm1[t])]
                if diff:
                    acc -= leaf_table[t, trailing_zeros(v[t] & arm0[t])]
            out[r] = acc


@njit(cache=True, inline="always")
def _search(bp, lo, m, x):
    """Number of ``bp[lo:lo + m]`` (ascending) below ``x``; branch-free binary search."""
    base = lo
    n = m
    while n > 1:
        half = n >> 1
        base = base + half if bp[base + half] < x else base
        n -= half
    return base - lo + (1 if bp[base] < x else 0)


@njit(cache=True, inline="always")
def _bin_of(x, feat, lo_scale, bp, grid):
    """Bin of ``x`` for the feature described by ``feat``/``lo_scale`` (see _BinnedTables)."""
    if feat[_KIND] == 1:
        n_codes = feat[_CODES]
        if x >= 0.0 and x < n_codes:
            return np.int64(x)
        return n_codes
    m = feat[_NBP]
    if np.isnan(x):
        return m + 1
    lo = feat[_BP]
    steps = feat[_STEPS]
    if steps < 0:
        return _search(bp, lo, m, x)
    c = (x - lo_scale[0]) * lo_scale[1]
    cells = feat[_CELLS]
    cell = 0 if not c > 0.0 else (cells - 1 if c >= cells else np.int64(c))
    k = np.int64(grid[feat[_GRID] + cell])
    for _ in range(steps):  # bp ends with +inf: k stops at m
        k += 1 if bp[lo + k] < x else 0
    if bp[lo + k] < x or (k > 0 and bp[lo + k - 1] >= x):  # out of the grid's reach
        return _search(bp, lo, m, x)
    return k


@njit(cache=True, inline="always")
def _bin_block(X, r0, m, feat, lo_scale, bp, grid):
    """(features, _BIN_BLOCK) bins of the ``m`` rows from ``r0``, feature by feature."""
    bins = np.empty((feat.shape[0], _BIN_BLOCK), dtype=np.int32)
    for i in range(feat.shape[0]):
        fi, ls, j = feat[i], lo_scale[i], feat[i, _COL]
        for r in range(m):
            bins[i, r] = _bin_of(X[r0 + r, j], fi, ls, bp, grid)
    return bins


@njit(parallel=True, cache=True, nogil=True)
def _binned_kernel(X, feat, lo_scale, bp, grid, tree_start, entry_feature, entry_offset,
                   table, leaf_table, arm1, arm0, diff, out):
    """:func:`_score_kernel`'s sums from binned tables (tree-outer within a row block)."""
    n = X.shape[0]
    n_trees = arm1.shape[0]
    n_blocks = (n + _BIN_BLOCK - 1) // _BIN_BLOCK
    for b in prange(n_blocks):
        r0 = b * _BIN_BLOCK
        m = min(n, r0 + _BIN_BLOCK) - r0
        bins = _bin_block(X, r0, m, feat, lo_scale, bp, grid)
        acc = np.zeros(_BIN_BLOCK)
        v = np.empty(_BIN_BLOCK, dtype=np.uint64)
        for t in range(n_trees):
            v[:] = _ALL
            for k in range(tree_start[t], tree_start[t + 1]):
                row = bins[entry_feature[k]]
                tab = table[entry_offset[k]:]
                for r in range(m):
                    v[r] &= tab[row[r]]
            a1, a0 = arm1[t], arm0[t]
            for r in range(m):
                acc[r] += leaf_table[t, trailing_zeros(v[r] & a1)]
                if diff:
                    acc[r] -= leaf_table[t, trailing_zeros(v[r] & a0)]
        for r in range(m):
            out[r0 + r] = acc[r]


@njit(parallel=True, cache=True, nogil=True)
def _wide_kernel(X, feat, lo_scale, bp, grid, wide_base, wide, leaf_table, arm1, arm0, diff,
                 out):
    """:func:`_binned_kernel`'s sums from the wide tables (row-outer: per row, one contiguous
    row of every tree's masks per feature, ANDed as vectors)."""
    n = X.shape[0]
    n_feats = feat.shape[0]
    n_trees = arm1.shape[0]
    n_blocks = (n + _BIN_BLOCK - 1) // _BIN_BLOCK
    for b in prange(n_blocks):
        r0 = b * _BIN_BLOCK
        m = min(n, r0 + _BIN_BLOCK) - r0
        bins = _bin_block(X, r0, m, feat, lo_scale, bp, grid)
        v = np.empty(n_trees, dtype=wide.dtype)
        for r in range(m):
            w = wide[wide_base[0] + bins[0, r]]
            for t in range(n_trees):
                v[t] = w[t]
            for i in range(1, n_feats):
                w = wide[wide_base[i] + bins[i, r]]
                for t in range(n_trees):
                    v[t] &= w[t]
            acc = 0.0
            for t in range(n_trees):
                acc += leaf_table[t, trailing_zeros(v[t] & arm1[t])]
                if diff:
                    acc -= leaf_table[t, trailing_zeros(v[t] & arm0[t])]
            out[r0 + r] = acc
