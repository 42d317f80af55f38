"""Fast refuters for the linear-regression estimate: all simulations from sufficient statistics.

DoWhy refits ``y ~ 1 + Z + W + Z*M`` (Z the treatment, W the adjustment set, M the effect
modifiers) once per simulation. Here a refuter costs a few passes over the data:

* A least-squares fit needs only the Gram matrix of its design. Within a treatment group
  (Z = 0 or Z = 1) every design column is a copy of a column of U = [1, V, y] (V: covariates)
  or zero, so a simulation's design Gram is assembled from two k x k group Grams of U.
* Row-weighted simulations (placebo groups, subsets, bootstrap counts) need
  ``sum_i w_si u_i u_i'`` for every simulation s: one matrix product of the row-wise outer
  products (upper triangle, n x k(k+1)/2) with the n x S weight matrix, over row blocks, so
  memory is bounded by the block size.
* Independent Gaussian columns (random common cause; the bootstrap's measurement noise) are
  drawn exactly in distribution from the Gram: with U'U = R'R, U'e = R'z (z ~ N(0, I)) and
  e'e = z'z + chi2/Wishart(n - rank), so no n-long noise vector is ever generated.

Each function returns the simulated effects with the same definition as the DoWhy refuter it
replaces (``dowhy/causal_refuters/*.py``); see :mod:`e2i_pipelines.analytics.causal.refuters`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats as st

Weights = Callable[[int, int], np.ndarray]
"""``weights(start, stop)`` -> (stop - start, S) numeric row weights of the rows start:stop."""

Advance = Callable[[int], None]

BLOCK_BYTES = 64 * 1024**2  # target size of one block of row-wise outer products
PRECISION = "float32"  # of the batched weighted-Gram products (see weighted_grams)


def _noop(_: int) -> None:
    return None


@dataclass(frozen=True)
class LinearProblem:
    """The regression data as arrays; rows sorted by treatment (controls first)."""

    U: np.ndarray  # n x k: [1, V..., y]
    n0: int  # rows with treatment 0 (U[:n0])
    adj: np.ndarray  # U column of each adjustment variable
    em: np.ndarray  # U column of each effect modifier
    noise_mult: np.ndarray  # per U column: times DoWhy's bootstrap adds noise to it (0 = never)

    @property
    def n(self) -> int:
        return self.U.shape[0]

    @property
    def k(self) -> int:
        return self.U.shape[1]

    @classmethod
    def from_frame(cls, data: pd.DataFrame, treatment: str, outcome: str,
                   adjustment_set: list[str], effect_modifiers: list[str]) -> LinearProblem:
        """Arrays for ``y ~ 1 + T + adjustment_set + T*effect_modifiers`` (DoWhy's design)."""
        covariates = list(dict.fromkeys([*adjustment_set, *effect_modifiers]))
        t = data[treatment].to_numpy().astype(bool)
        order = np.argsort(t, kind="stable")
        n = len(data)
        U = np.empty((n, len(covariates) + 2))
        U[:, 0] = 1.0
        U[:, 1:-1] = data[covariates].to_numpy(dtype=np.float64)[order]
        U[:, -1] = data[outcome].to_numpy(dtype=np.float64)[order]
        pos = {c: 1 + i for i, c in enumerate(covariates)}
        # DoWhy's bootstrap adds noise once per listing in adjustment set + effect modifiers
        mult = np.zeros(U.shape[1], dtype=int)
        for c in [*adjustment_set, *effect_modifiers]:
            mult[pos[c]] += 1
        return cls(U=U, n0=int((~t).sum()), adj=np.array([pos[c] for c in adjustment_set], int),
                   em=np.array([pos[c] for c in effect_modifiers], int), noise_mult=mult)

    # --- design algebra -------------------------------------------------------------------
    def design_maps(self, extra_outcomes: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Maps A_z (U cols x design cols) with design_z = U_z A_z for groups z = 0, 1.

        Design columns: [1, Z, W..., Z*M..., y, extra outcomes...]; U may carry
        ``extra_outcomes`` more columns after y (mapped one to one).
        """
        a, b = len(self.adj), len(self.em)
        ku = self.k + extra_outcomes
        kd = 2 + a + b + 1 + extra_outcomes
        maps = []
        for z in (0.0, 1.0):
            A = np.zeros((ku, kd))
            A[0, 0] = 1.0
            A[0, 1] = z
            A[self.adj, 2 + np.arange(a)] = 1.0
            A[self.em, 2 + a + np.arange(b)] = z
            for j in range(1 + extra_outcomes):
                A[self.k - 1 + j, 2 + a + b + j] = 1.0
            maps.append(A)
        return maps[0], maps[1]

    def design_gram(self, G0: np.ndarray, G1: np.ndarray, extra_outcomes: int = 0) -> np.ndarray:
        """(S, kd, kd) design Grams from (S, ku, ku) group Grams."""
        A0, A1 = self.design_maps(extra_outcomes)
        return A0.T @ G0 @ A0 + A1.T @ G1 @ A1

    def em_means(self, G: np.ndarray) -> np.ndarray:
        """(S, b) means of the effect modifiers over the rows of total Grams ``G``."""
        return G[:, 0, self.em] / G[:, 0, 0][:, None]

    def ate(self, Gd: np.ndarray, n_regressors: int, means: np.ndarray) -> np.ndarray:
        """(S, n_outcomes) ATE b_Z + sum_j g_j mean(M_j) from design Grams [X..., outcomes]."""
        p = n_regressors
        XX, Xy = Gd[:, :p, :p], Gd[:, :p, p:]
        d = np.sqrt(np.einsum("sii->si", XX))
        scaled = XX / (d[:, :, None] * d[:, None, :])
        beta = np.linalg.solve(scaled, Xy / d[:, :, None]) / d[:, :, None]
        a, b = len(self.adj), len(self.em)
        return beta[:, 1, :] + np.einsum("sjo,sj->so", beta[:, 2 + a:2 + a + b, :], means)

    def estimate(self) -> float:
        """The point estimate from the full data (equals DoWhy's linear regression)."""
        G0 = gram(self.U[:self.n0])[None]
        G1 = gram(self.U[self.n0:])[None]
        Gd = self.design_gram(G0, G1)
        return float(self.ate(Gd, Gd.shape[1] - 1, self.em_means(G0 + G1))[0, 0])


# --- Grams --------------------------------------------------------------------------------
def gram(U: np.ndarray) -> np.ndarray:
    return U.T @ U


def _block_rows(n_pairs: int, n_sims: int) -> int:
    return max(1024, BLOCK_BYTES // (8 * (n_pairs + n_sims)))


def weighted_grams(U: np.ndarray, weights: Weights, n_sims: int,
                   block_rows: int | None = None, level: float = 0.0,
                   precision: str | None = None) -> np.ndarray:
    """(S, k, k) ``sum_i w_si u_i u_i'`` for all S weight columns, in row blocks.

    Columns are centred (u = L uc, uc = u - mean except the intercept) and the sum split as
    ``level * sum_i uc uc' + sum_i (w_si - level) uc uc'``: the first term exactly in float64,
    the second (mean zero when ``level`` is the expected weight) by one matrix product per
    block of the upper-triangle products with the block's weights. With ``precision``
    "float32" that product runs in single precision (2x faster); its rounding error relative
    to the simulated spread is ~1e-5, far below Monte-Carlo error. Block sums accumulate in
    float64. "float64" is exact to rounding.
    """
    dtype = np.float32 if (precision or PRECISION) == "float32" else np.float64
    n, k = U.shape
    iu, ju = np.triu_indices(k)
    means = U.mean(axis=0)
    means[0] = 0.0  # the intercept column stays 1
    L = np.eye(k)
    L[1:, 0] = means[1:]
    block = block_rows or _block_rows(len(iu), n_sims)
    acc = np.zeros((len(iu), n_sims))
    centred_gram = np.zeros((k, k))
    F = np.empty((len(iu), min(block, n)), dtype=dtype)
    for start in range(0, n, block):
        stop = min(n, start + block)
        Uc = U[start:stop] - means  # centred per block: no n x k copy
        centred_gram += Uc.T @ Uc
        Ub = np.asfortranarray(Uc, dtype=dtype)
        Fb = F[:, :stop - start]
        for p, (i, j) in enumerate(zip(iu, ju, strict=True)):
            np.multiply(Ub[:, i], Ub[:, j], out=Fb[p])
        W = weights(start, stop).astype(dtype)  # raw 0/1 or counts -> deviations in place
        W -= level
        acc += Fb @ W
    Gc = np.empty((n_sims, k, k))
    Gc[:, iu, ju] = acc.T
    Gc[:, ju, iu] = acc.T
    Gc += level * centred_gram
    return L @ Gc @ L.T


def _root(G: np.ndarray) -> np.ndarray:
    """R (r x k) with R'R = G, r the numerical rank of G."""
    lam, vec = np.linalg.eigh(G)
    keep = lam > lam.max() * 1e-12
    return np.sqrt(lam[keep])[:, None] * vec[:, keep].T


def _wishart_diag(df: float, scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Wishart(df, diag(scale**2)) by the Bartlett decomposition."""
    q = len(scale)
    A = np.tril(rng.standard_normal((q, q)), -1)
    A[np.diag_indices(q)] = np.sqrt(rng.chisquare(df - np.arange(q)))
    L = scale[:, None] * A
    return L @ L.T


def _sim_chunks(n_sims: int, n_rows: int, max_cells: int = 50_000_000) -> list[range]:
    size = max(1, min(n_sims, max_cells // max(n_rows, 1)))
    return [range(s, min(n_sims, s + size)) for s in range(0, n_sims, size)]


# --- refuters -----------------------------------------------------------------------------
def placebo_effects_from(problem: LinearProblem, placebo: Weights, n_sims: int,
                         block_rows: int | None = None,
                         precision: str | None = None) -> np.ndarray:
    """Effects of placebo treatments given as 0/1 columns (rows in ``problem.U`` order)."""
    G_all = gram(problem.U)[None]
    G1 = weighted_grams(problem.U, placebo, n_sims, block_rows, 0.5, precision)
    G0 = G_all - G1
    Gd = problem.design_gram(G0, G1)
    return problem.ate(Gd, Gd.shape[1] - 1, problem.em_means(G0 + G1))[:, 0]


def placebo_effects(problem: LinearProblem, n_sims: int, rng: np.random.Generator,
                    advance: Advance = _noop) -> np.ndarray:
    """DoWhy placebo_treatment_refuter (bool treatment): placebo ~ Bernoulli(0.5) per row."""
    out = []
    for chunk in _sim_chunks(n_sims, problem.n):
        def draw(start: int, stop: int, s: int = len(chunk)) -> np.ndarray:
            return rng.integers(0, 2, size=(stop - start, s), dtype=np.int8)

        out.append(placebo_effects_from(problem, draw, len(chunk)))
        advance(len(chunk))
    return np.concatenate(out)


def _group_weights(W: np.ndarray, offset: int) -> Weights:
    return lambda start, stop: W[:, offset + start:offset + stop].T


def row_weight_grams(problem: LinearProblem, W: np.ndarray, block_rows: int | None = None,
                     level: float = 1.0,
                     precision: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Group Grams (S, k, k) for row weights W (S x n, rows in ``problem.U`` order).

    ``level``: the expected weight (1 for bootstrap counts, the kept share for subsets).
    """
    n0, S = problem.n0, W.shape[0]
    G0 = weighted_grams(problem.U[:n0], _group_weights(W, 0), S, block_rows, level, precision)
    G1 = weighted_grams(problem.U[n0:], _group_weights(W, n0), S, block_rows, level, precision)
    return G0, G1


def subset_effects_from(problem: LinearProblem, W: np.ndarray, block_rows: int | None = None,
                        level: float = 1.0, precision: str | None = None) -> np.ndarray:
    """Effects re-estimated on row subsets given as 0/1 (or count) weights W (S x n)."""
    G0, G1 = row_weight_grams(problem, W, block_rows, level, precision)
    Gd = problem.design_gram(G0, G1)
    return problem.ate(Gd, Gd.shape[1] - 1, problem.em_means(G0 + G1))[:, 0]


def subset_effects(problem: LinearProblem, n_sims: int, fraction: float,
                   rng: np.random.Generator, advance: Advance = _noop) -> np.ndarray:
    """DoWhy data_subset_refuter: refit on ``round(fraction * n)`` rows without replacement."""
    n = problem.n
    m = int(round(fraction * n))
    out = []
    for chunk in _sim_chunks(n_sims, n):
        W = np.ones((len(chunk), n), dtype=np.uint8)
        for i in range(len(chunk)):
            W[i, rng.choice(n, n - m, replace=False, shuffle=False)] = 0
        out.append(subset_effects_from(problem, W, level=m / n))
        advance(len(chunk))
    return np.concatenate(out)


def _noisy_gram(G: np.ndarray, cols: np.ndarray, scale: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Gram of U + E (E: independent N(0, scale_j^2) on U columns ``cols``), drawn exactly."""
    R = _root(G)
    Z = rng.standard_normal((R.shape[0], len(cols))) * scale
    UE = R.T @ Z
    EE = Z.T @ Z + _wishart_diag(G[0, 0] - R.shape[0], scale, rng)
    out = G.copy()
    out[:, cols] += UE
    out[cols, :] += UE.T
    out[np.ix_(cols, cols)] += EE
    return out


def bootstrap_effects_from(problem: LinearProblem, counts: np.ndarray, noise: float,
                           rng: np.random.Generator, block_rows: int | None = None,
                           precision: str | None = None) -> np.ndarray:
    """Effects on resamples with multiplicities ``counts`` (S x n) plus DoWhy's noise.

    DoWhy's bootstrap_refuter (required_variables=True) adds N(0, (noise * sd_j)^2) to every
    float covariate of the resample, sd_j the resample's sample sd, once per listing of the
    column in adjustment set + effect modifiers (twice if listed twice, the second time
    scaled by the already-noisy sd: variance factor (1 + noise^2)^m - 1).
    """
    G0, G1 = row_weight_grams(problem, counts, block_rows, 1.0, precision)
    cols = np.flatnonzero(problem.noise_mult)
    if noise > 0 and len(cols):
        G = G0 + G1
        N = G[:, 0, 0]
        var = (G[:, cols, cols] - G[:, 0, cols] ** 2 / N[:, None]) / (N[:, None] - 1)
        factor = (1.0 + noise**2) ** problem.noise_mult[cols] - 1.0
        scale = np.sqrt(var * factor)
        for s in range(len(N)):
            G0[s] = _noisy_gram(G0[s], cols, scale[s], rng)
            G1[s] = _noisy_gram(G1[s], cols, scale[s], rng)
    Gd = problem.design_gram(G0, G1)
    return problem.ate(Gd, Gd.shape[1] - 1, problem.em_means(G0 + G1))[:, 0]


def bootstrap_effects(problem: LinearProblem, n_sims: int, noise: float,
                      rng: np.random.Generator, advance: Advance = _noop) -> np.ndarray:
    """DoWhy bootstrap_refuter: resample n rows with replacement, noise on covariates."""
    n = problem.n
    out = []
    for chunk in _sim_chunks(n_sims, n):
        counts = np.empty((len(chunk), n), dtype=np.uint8)
        for i in range(len(chunk)):
            counts[i] = np.bincount(rng.integers(0, n, n), minlength=n)
        out.append(bootstrap_effects_from(problem, counts, noise, rng))
        advance(len(chunk))
    return np.concatenate(out)


def random_common_cause_effects(problem: LinearProblem, n_sims: int,
                                rng: np.random.Generator, advance: Advance = _noop) -> np.ndarray:
    """DoWhy random_common_cause: refit with an extra N(0, 1) adjustment column."""
    G0 = gram(problem.U[:problem.n0])[None]
    G1 = gram(problem.U[problem.n0:])[None]
    Gd = problem.design_gram(G0, G1)[0]
    means = problem.em_means(G0 + G1)
    kd = Gd.shape[0]
    R = _root(Gd)
    Z = rng.standard_normal((n_sims, R.shape[0]))
    Du = Z @ R  # (S, kd): [X, y]'u
    uu = (Z**2).sum(axis=1) + rng.chisquare(problem.n - R.shape[0], n_sims)
    p = kd - 1
    aug = np.empty((n_sims, kd + 1, kd + 1))  # order [X..., u, y]
    idx = np.r_[np.arange(p), kd]
    aug[:, idx[:, None], idx[None, :]] = Gd
    aug[:, p, idx] = Du
    aug[:, idx, p] = Du
    aug[:, p, p] = uu
    advance(n_sims)
    return problem.ate(aug, p + 1, np.repeat(means, n_sims, axis=0))[:, 0]


def _bordered(G: np.ndarray, cross: np.ndarray, corner: float) -> np.ndarray:
    """(1, k+1, k+1) Gram of [U, w] from U'U, U'w and w'w."""
    k = G.shape[0]
    out = np.empty((1, k + 1, k + 1))
    out[0, :k, :k] = G
    out[0, :k, k] = out[0, k, :k] = cross
    out[0, k, k] = corner
    return out


def flip_threshold(kappa_t: float) -> float:
    """DoWhy's binary_flip rule: the treatment flips where w >= threshold (w ~ N(0,1))."""
    alpha = 2 * kappa_t - 1 if kappa_t >= 0.5 else 1 - 2 * kappa_t
    interval = st.norm().interval(alpha)
    return float(interval[0] if kappa_t >= 0.5 else interval[1])


def unobserved_confounder_effects(problem: LinearProblem, kappa_t: np.ndarray,
                                  kappa_y: np.ndarray, rng: np.random.Generator,
                                  advance: Advance = _noop) -> np.ndarray:
    """(len(kappa_t), len(kappa_y)) effects with a simulated confounder w ~ N(0, 1).

    As DoWhy's add_unobserved_common_cause (direct-simulation, binary_flip on treatment,
    linear on outcome): the treatment flips where w >= threshold(kappa_t) and the outcome
    becomes y - kappa_y * w, applied to the original data at every grid point. One w is drawn
    per kappa_t; the effect is linear in kappa_y (ATE(y) - kappa_y * ATE(w)).
    """
    kappa_t = np.atleast_1d(np.asarray(kappa_t, float))
    kappa_y = np.atleast_1d(np.asarray(kappa_y, float))
    n, K = problem.n, len(kappa_t)
    t = np.zeros(n, dtype=bool)
    t[problem.n0:] = True
    w = rng.standard_normal((n, K))
    thresholds = np.array([flip_threshold(v) for v in kappa_t])
    t_new = t[:, None] ^ (w >= thresholds[None, :])
    tw = t_new.astype(np.float64)
    G1_u = weighted_grams(problem.U, lambda a, b: tw[a:b], K, level=float(tw.mean()))
    G_u = gram(problem.U)
    uw_tot, uw_1 = problem.U.T @ w, problem.U.T @ (tw * w)
    ww_tot, ww_1 = (w * w).sum(axis=0), (tw * w * w).sum(axis=0)
    out = np.empty((K, len(kappa_y)))
    for j in range(K):
        G_tot = _bordered(G_u, uw_tot[:, j], ww_tot[j])
        G1 = _bordered(G1_u[j], uw_1[:, j], ww_1[j])
        Gd = problem.design_gram(G_tot - G1, G1, extra_outcomes=1)
        ate_y, ate_w = problem.ate(Gd, Gd.shape[1] - 2, problem.em_means(G_tot))[0]
        out[j] = ate_y - kappa_y * ate_w
        advance(len(kappa_y))
    return out
