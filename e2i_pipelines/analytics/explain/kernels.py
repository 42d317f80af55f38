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
position bit set in a "cold" mask.
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
def _cold_masks(X, r, n0, n1, node_slot, node_threshold, node_kind, node_default_left,
                node_missing, node_pos, node_feature, node_cat_offset, node_cat_len, cat_words,
                slots):
    """One fixed-order pass over a tree's nodes for row ``r``: every child's slot gets the
    cold mask (path positions whose split the row fails) of the path down to it."""
    for nd in range(n0, n1):
        cold = slots[node_slot[nd]]
        left = np.int64(_goes_left(X[r, node_feature[nd]], nd, node_threshold, node_kind,
                                   node_default_left, node_missing, node_cat_offset,
                                   node_cat_len, cat_words))
        bit = np.int64(1) << node_pos[nd]
        k = 1 + 2 * (nd - n0)
        slots[k] = cold | (bit * (1 - left))
        slots[k + 1] = cold | (bit * left)


@njit(cache=True)
def _leaf_direct(phi, row, leaf, hot, d, leaf_offset, leaf_feature, leaf_z, leaf_value, W,
                 esym, ediv):
    """Contribution of one deep leaf for one hot set, O(d^2) without a table."""
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
            phi[row, f] += v * (1.0 - zk) * zout * gk
        else:
            phi[row, f] += cold


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
def _leaf_interventional(phi, row, leaf, hot, d, leaf_offset, leaf_feature, leaf_value, W,
                         bg_offset, bg_pattern, bg_weight, acc):
    """Interventional contribution of one leaf without a table: sum over its distinct
    background patterns (weights = share of background rows), O(patterns * d)."""
    o = leaf_offset[leaf]
    v = leaf_value[leaf]
    acc[:d] = 0.0
    for j in range(bg_offset[leaf], bg_offset[leaf + 1]):
        interventional_add(acc, 0, d, hot, bg_pattern[j], v * bg_weight[j], W)
    for k in range(d):
        phi[row, leaf_feature[o + k]] += acc[k]


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

    A tree's nodes are visited in the same (pre-)order for every row, so there is no stack
    and no data-dependent branch: node ``nd`` reads its cold mask from the slot its parent
    wrote and writes its two children's (the child the row does not take gets ``nd``'s
    position bit), then every leaf reads its mask from its slot.
    """
    n = X.shape[0]
    n_blocks = (n + block - 1) // block
    interventional = bg_offset.shape[0] > 0
    for b in prange(n_blocks):
        slots = np.zeros(2 * max_nodes + 1, dtype=np.int64)  # slot 0: the root's (empty)
        esym = np.empty(64)
        ediv = np.empty(64)
        r0 = b * block
        r1 = min(n, r0 + block)
        for t in range(tree_range.shape[0]):
            n0, n1 = tree_range[t, 0], tree_range[t, 1]
            l0, l1 = tree_range[t, 2], tree_range[t, 3]
            for r in range(r0, r1):
                _cold_masks(X, r, n0, n1, node_slot, node_threshold, node_kind,
                            node_default_left, node_missing, node_pos, node_feature,
                            node_cat_offset, node_cat_len, cat_words, slots)
                for leaf in range(l0, l1):
                    d = leaf_depth[leaf]
                    hot = ((np.int64(1) << d) - 1) & ~slots[leaf_slot[leaf]]
                    t0 = table_offset[leaf]
                    if t0 >= 0:
                        o = leaf_offset[leaf]
                        base = t0 + hot * d
                        for k in range(d):
                            phi[r, leaf_feature[o + k]] += tables[base + k]
                    elif interventional:
                        _leaf_interventional(phi, r, leaf, hot, d, leaf_offset, leaf_feature,
                                             leaf_value, W, bg_offset, bg_pattern, bg_weight,
                                             esym)
                    else:
                        _leaf_direct(phi, r, leaf, hot, d, leaf_offset, leaf_feature,
                                     leaf_z, leaf_value, W, esym, ediv)


def set_threads(n: int) -> None:
    """Numba worker threads for the parallel kernels (bounded by the launch maximum)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
