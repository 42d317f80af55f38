"""Interventional TreeSHAP tables: the per-row kernel of the path-dependent method, with
per-leaf tables averaged over a background set (the WOODELF construction).

For a leaf with value v and d distinct path features, a row's *pattern* has bit k set when
the row satisfies every split on feature k of the path. Against one background row z
(pattern b), row x (pattern f) gets 0 unless f | b covers all d features; then with
S_x = f \\ b and S_z = b \\ f, each k in S_x gets v (|S_x|-1)! |S_z|! / (|S_x|+|S_z|)! and
each k in S_z gets -v |S_x|! (|S_z|-1)! / (|S_x|+|S_z|)!. Table T[f] is the mean over the
background, computed from the counts of its distinct patterns; leaves too deep for a table
keep their distinct patterns and weights for the kernel's per-row sum.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from e2i_pipelines.analytics.explain.kernels import cold_masks, interventional_add


@njit(parallel=True, cache=True)
def background_patterns(Xb, tree_range, node_slot, leaf_slot, node_threshold, node_kind,
                        node_default_left, node_missing, node_pos, node_feature,
                        node_cat_offset, node_cat_len, cat_words, leaf_depth, count_offset,
                        counts, deep_index, deep_hot, max_nodes):
    """Per leaf the background's pattern counts (``counts[count_offset[leaf] + b]``, leaves
    with a table) or each background row's pattern (``deep_hot[deep_index[leaf], r]``).
    Trees run in parallel; each writes only its own leaves."""
    n = Xb.shape[0]
    block = 1024
    xt = np.ascontiguousarray(Xb.T)
    for t in prange(tree_range.shape[0]):
        masks = np.zeros((2 * max_nodes + 1, block), dtype=np.int64)
        n0, n1 = tree_range[t, 0], tree_range[t, 1]
        l0, l1 = tree_range[t, 2], tree_range[t, 3]
        for r0 in range(0, n, block):
            m = min(n, r0 + block) - r0
            cold_masks(xt[:, r0:r0 + m], m, n0, n1, node_slot, node_threshold, node_kind,
                       node_default_left, node_missing, node_pos, node_feature,
                       node_cat_offset, node_cat_len, cat_words, masks)
            for leaf in range(l0, l1):
                d = leaf_depth[leaf]
                full = (np.int64(1) << d) - 1
                for i in range(m):
                    hot = full & ~masks[leaf_slot[leaf], i]
                    if count_offset[leaf] >= 0:
                        counts[count_offset[leaf] + hot] += 1.0
                    elif deep_index[leaf] >= 0:
                        deep_hot[deep_index[leaf], r0 + i] = hot


@njit(parallel=True, cache=True)
def interventional_tables(counts, count_offset, leaf_depth, leaf_value, table_offset, W,
                          n_background, tables):
    """tables[table_offset[leaf] + f * d + k] = mean over the background of the leaf's
    contribution to position k for foreground pattern f.

    Only foreground patterns f that cover ~b matter for background pattern b, so every
    present b enumerates the 2^|b| patterns f = ~b | t (t a submask of b)."""
    for leaf in prange(leaf_depth.shape[0]):
        t0 = table_offset[leaf]
        if t0 < 0:
            continue
        d = leaf_depth[leaf]
        full = (np.int64(1) << d) - 1
        c0 = count_offset[leaf]
        scale = leaf_value[leaf] / n_background
        for b in range(full + 1):
            c = counts[c0 + b]
            if c == 0.0:
                continue
            rest = full & ~b
            t = b
            while True:
                f = rest | t
                interventional_add(tables, t0 + f * d, d, f, b, scale * c, W)
                if t == 0:
                    break
                t = (t - 1) & b
