"""Numba kernels: exact TreeSHAP by per-leaf subset tables (FastTreeSHAP v2).

The per-row kernel serves both perturbations; the path-dependent tables are built here,
the interventional ones in :mod:`e2i_pipelines.analytics.explain.interventional`.

For a leaf with value v and unique path features D (|D| = d, cover-fraction products z_k),
a row only matters through its *hot set* P ⊆ D: the features whose every split on the
path sends the row towards the leaf. With w(s, d) = s!(d-1-s)!/d! and
G(Q) = sum_{S ⊆ Q} w(|S|, d) prod_{j ∈ Q \\ S} z_j, the leaf's contribution is

    phi_k = -v * Z(D \\ P) * G(P)                  for k not in P
    phi_k =  v * (1 - z_k) * Z(D \\ P) * G(P \\ k)   for k in P

(Z = product of z). This equals LightGBM's recursive TreeSHAP. Tables hold phi for all
2^d hot sets of a leaf (d <= ``table_depth``); deeper leaves evaluate the formula per row
with elementary symmetric polynomials in O(d^2). A row's hot set of every leaf comes from
one fixed-order pass over the tree's nodes: the child the row does not take gets the node's
position bit set in a "cold" mask. Rows go in blocks: node by node and then leaf by leaf,
rows inner.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

_ZERO = np.float64(np.float32(1e-35))  # LightGBM kZeroThreshold


def shapley_weights(max_d: int) -> np.ndarray:
    """W[d, s] = s! (d-1-s)! / d! for 1 <= d <= max_d, 0 <= s < d."""
    w = np.zeros((max_d + 1, max_d + 1))
    for d in range(1, max_d + 1):
        for s in range(d):
            w[d, s] = math.exp(math.lgamma(s + 1) + math.lgamma(d - s) - math.lgamma(d + 1))
    return w


@njit(cache=True)
def _leaf_table(z, v, W, out):
    """Fill out[P * d + k] for all hot sets P of one leaf (see module docstring)."""
    d = z.shape[0]
    n = 1 << d
    esym = np.zeros((n, d + 1))  # elementary symmetric polynomials of z over P
    zin = np.ones(n)  # product of z over P
    g = np.zeros(n)
    esym[0, 0] = 1.0
    for p in range(1, n):
        low = 0
        while not (p >> low) & 1:
            low += 1
        prev = p & (p - 1)
        zl = z[low]
        zin[p] = zin[prev] * zl
        esym[p, 0] = 1.0
        for j in range(1, d + 1):
            esym[p, j] = esym[prev, j] + zl * esym[prev, j - 1]
    full = n - 1
    for p in range(n):
        cnt = 0
        for k in range(d):
            cnt += (p >> k) & 1
        acc = 0.0
        for s in range(cnt + 1):
            acc += W[d, s] * esym[p, cnt - s]
        g[p] = acc
    for p in range(n):
        zout = zin[full ^ p]
        cold = -v * zout * g[p]
        for k in range(d):
            if (p >> k) & 1:
                out[p * d + k] = v * (1.0 - z[k]) * zout * g[p ^ (1 << k)]
            else:
                out[p * d + k] = cold


@njit(cache=True)
def build_tables(leaf_depth, leaf_offset, leaf_z, leaf_value, table_offset, table_depth, W,
                 tables):
    """Fill the subset tables of every leaf with depth <= table_depth."""
    for leaf in range(leaf_depth.shape[0]):
        d = leaf_depth[leaf]
        if d == 0 or d > table_depth:
            continue
        o = leaf_offset[leaf]
        size = (1 << d) * d
        t0 = table_offset[leaf]
        _leaf_table(leaf_z[o:o + d], leaf_value[leaf], W, tables[t0:t0 + size])


@njit(cache=True, inline="always")
def _goes_left(x, nd, node_threshold, node_kind, node_default_left, node_missing,
               node_cat_offset, node_cat_len, cat_words):
    """LightGBM's Tree::Decision for one node."""
    if node_kind[nd] == 0:
        mt = node_missing[nd]
        if math.isnan(x) and mt != 2:
            x = 0.0
        if (mt == 1 and x >= -_ZERO and x <= _ZERO) or (mt == 2 and math.isnan(x)):
            return node_default_left[nd]
        return x <= node_threshold[nd]
    if math.isnan(x) or x < 0.0 or x >= 2147483648.0:
        return False
    iv = np.int64(x)  # truncation towards zero, as static_cast<int>
    if iv < 0:
        return False
    word = iv >> 5
    if word >= node_cat_len[nd]:
        return False
    return ((cat_words[node_cat_offset[nd] + word] >> np.uint32(iv & 31)) & np.uint32(1)) == 1


@njit(cache=True, inline="always")
def _split(masks, s, k, bit, left, i):
    """Children of node slot ``s`` for block row ``i``: the child not taken gets ``bit``."""
    cold = masks[s, i]
    lb = bit * np.int64(left)
    masks[k, i] = cold | (bit ^ lb)
    masks[k + 1, i] = cold | lb


@njit(cache=True, inline="always")
def cold_masks(xt, m, n0, n1, node_slot, node_threshold, node_kind, node_default_left,
               node_missing, node_pos, node_feature, node_cat_offset, node_cat_len, cat_words,
               masks):
    """One fixed-order pass over a tree's nodes for the first ``m`` rows of a block
    (``xt``: features x rows): every child's slot ``masks[slot, i]`` gets the cold mask (path
    positions whose split row ``i`` fails) of the path down to it. Nodes outer, rows inner:
    the numerical decisions (one loop per missing type) vectorise over the rows."""
    for nd in range(n0, n1):
        s = node_slot[nd]
        k = 1 + 2 * (nd - n0)
        bit = np.int64(1) << node_pos[nd]
        f = node_feature[nd]
        mt = node_missing[nd]
        thr = node_threshold[nd]
        dl = node_default_left[nd]
        if node_kind[nd] != 0:
            for i in range(m):
                _split(masks, s, k, bit, _goes_left(xt[f, i], nd, node_threshold, node_kind,
                                                    node_default_left, node_missing,
                                                    node_cat_offset, node_cat_len, cat_words),
                       i)
        elif mt == 2:  # NaN -> default direction
            for i in range(m):
                x = xt[f, i]
                _split(masks, s, k, bit, (x <= thr) | (math.isnan(x) & dl), i)
        elif mt == 1:  # NaN is 0; |x| <= kZeroThreshold -> default direction
            for i in range(m):
                x = xt[f, i]
                x = 0.0 if math.isnan(x) else x
                zero = (x >= -_ZERO) & (x <= _ZERO)
                _split(masks, s, k, bit, dl if zero else x <= thr, i)
        else:  # NaN is 0
            for i in range(m):
                x = xt[f, i]
                x = 0.0 if math.isnan(x) else x
                _split(masks, s, k, bit, x <= thr, i)


@njit(cache=True)
def _leaf_direct(acc, i, leaf, hot, d, leaf_offset, leaf_feature, leaf_z, leaf_value, W,
                 esym, ediv):
    """Contribution of one deep leaf for one hot set, O(d^2) without a table, added to
    ``acc[feature, i]``."""
    o = leaf_offset[leaf]
    v = leaf_value[leaf]
    zout = 1.0
    cnt = 0
    esym[0] = 1.0
    for j in range(1, d + 1):
        esym[j] = 0.0
    for k in range(d):
        zk = leaf_z[o + k]
        if (hot >> k) & 1:
            cnt += 1
            for j in range(cnt, 0, -1):
                esym[j] += zk * esym[j - 1]
        else:
            zout *= zk
    g = 0.0
    for s in range(cnt + 1):
        g += W[d, s] * esym[cnt - s]
    cold = -v * zout * g
    for k in range(d):
        f = leaf_feature[o + k]
        if (hot >> k) & 1:
            zk = leaf_z[o + k]
            ediv[0] = 1.0
            for j in range(1, cnt):
                ediv[j] = esym[j] - zk * ediv[j - 1]
            gk = 0.0
            for s in range(cnt):
                gk += W[d, s] * ediv[cnt - 1 - s]
            acc[f, i] += v * (1.0 - zk) * zout * gk
        else:
            acc[f, i] += cold


@njit(cache=True, inline="always")
def popcount(m):
    """Set bits of a non-negative int64."""
    c = 0
    while m:
        m &= m - 1
        c += 1
    return c


@njit(cache=True, inline="always")
def interventional_add(out, o, d, f, b, scale, W):
    """out[o + k] += interventional SHAP of position k for foreground pattern ``f`` against
    background pattern ``b`` of a leaf with value * weight ``scale`` (0 unless f | b covers
    all d positions; x-only positions get +, z-only positions - Shapley weights)."""
    full = (np.int64(1) << d) - 1
    if (f | b) != full:
        return
    sx = f & ~b
    sz = b & ~f
    nx = popcount(sx)
    nz = popcount(sz)
    if nx + nz == 0:
        return
    pos = scale * W[nx + nz, nx - 1] if nx > 0 else 0.0
    neg = -scale * W[nx + nz, nx] if nz > 0 else 0.0
    for k in range(d):
        if (sx >> k) & 1:
            out[o + k] += pos
        elif (sz >> k) & 1:
            out[o + k] += neg


@njit(cache=True)
def _leaf_interventional(acc, i, leaf, hot, d, leaf_offset, leaf_feature, leaf_value, W,
                         bg_offset, bg_pattern, bg_weight, buf):
    """Interventional contribution of one leaf without a table: sum over its distinct
    background patterns (weights = share of background rows), O(patterns * d), added to
    ``acc[feature, i]``."""
    o = leaf_offset[leaf]
    v = leaf_value[leaf]
    buf[:d] = 0.0
    for j in range(bg_offset[leaf], bg_offset[leaf + 1]):
        interventional_add(buf, 0, d, hot, bg_pattern[j], v * bg_weight[j], W)
    for k in range(d):
        acc[leaf_feature[o + k], i] += buf[k]


@njit(cache=True, inline="always")
def transpose_block(X, r0, m, xt):
    """xt[j, i] = X[r0 + i, j] for the block's ``m`` rows."""
    for i in range(m):
        for j in range(X.shape[1]):
            xt[j, i] = X[r0 + i, j]


@njit(parallel=True, cache=True)
def shap_kernel(X, tree_range, node_slot, leaf_slot, node_threshold, node_kind,
                node_default_left, node_missing, node_pos, node_feature, node_cat_offset,
                node_cat_len, cat_words, leaf_depth, leaf_offset, leaf_feature, leaf_z,
                leaf_value, table_offset, tables, W, bg_offset, bg_pattern, bg_weight,
                max_nodes, block, phi):
    """phi[r, f] += exact SHAP of every tree for every row of X (rows in parallel blocks).

    The tables decide the flavour (path-dependent or interventional); leaves without a
    table use the per-row path-dependent formula, or, when ``bg_offset`` is not empty, the
    per-row interventional sum over the leaf's background patterns.

    Per block of rows (transposed to features x rows) and tree, :func:`cold_masks` gives
    every leaf the cold mask of every row; then leaf by leaf, rows inner, each row's table
    entries go into a features x rows accumulator. Rows inner keeps consecutive additions
    independent (rows outer would chain every leaf's additions through the same few
    phi[r, f]) and the leaf's table hot across the block.
    """
    n = X.shape[0]
    nf = phi.shape[1]
    n_blocks = (n + block - 1) // block
    interventional = bg_offset.shape[0] > 0
    for b in prange(n_blocks):
        r0 = b * block
        m = min(n, r0 + block) - r0
        masks = np.zeros((2 * max_nodes + 1, block), dtype=np.int64)  # slot 0: the root's
        acc = np.zeros((nf, block))
        xt = np.empty((X.shape[1], block))
        idx = np.empty(block, dtype=np.int64)
        esym = np.empty(64)
        ediv = np.empty(64)
        transpose_block(X, r0, m, xt)
        for t in range(tree_range.shape[0]):
            cold_masks(xt, m, tree_range[t, 0], tree_range[t, 1], node_slot, node_threshold,
                       node_kind, node_default_left, node_missing, node_pos, node_feature,
                       node_cat_offset, node_cat_len, cat_words, masks)
            for leaf in range(tree_range[t, 2], tree_range[t, 3]):
                d = leaf_depth[leaf]
                full = (np.int64(1) << d) - 1
                ls = leaf_slot[leaf]
                t0 = table_offset[leaf]
                o = leaf_offset[leaf]
                if t0 >= 0:
                    for i in range(m):
                        idx[i] = t0 + (full & ~masks[ls, i]) * d
                    for k in range(d):
                        fk = leaf_feature[o + k]
                        for i in range(m):
                            acc[fk, i] += tables[idx[i] + k]
                elif interventional:
                    for i in range(m):
                        _leaf_interventional(acc, i, leaf, full & ~masks[ls, i], d,
                                             leaf_offset, leaf_feature, leaf_value, W,
                                             bg_offset, bg_pattern, bg_weight, esym)
                else:
                    for i in range(m):
                        _leaf_direct(acc, i, leaf, full & ~masks[ls, i], d, leaf_offset,
                                     leaf_feature, leaf_z, leaf_value, W, esym, ediv)
        for i in range(m):
            for j in range(nf):
                phi[r0 + i, j] += acc[j, i]


def set_threads(n: int) -> None:
    """Numba worker threads for the parallel kernels (bounded by the launch maximum)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
