"""Refuters for the score-based estimators (difference in means, weighting, AIPW, DML).

Same definitions as DoWhy's refuters (and :mod:`refute_linear`), computed from the
estimator's :class:`~e2i_pipelines.analytics.causal.estimators.EffectScores` where a refit
would keep its nuisance models:

* placebo: the treatment is replaced by a Bernoulli(0.5) placebo, whose propensity is known
  (0.5) and which no covariate predicts; every estimator then reduces to the difference in
  means of the outcome net of its covariate prediction (``scores.residual``: y - m(x) for
  AIPW and DML, y - mean(y) otherwise). One pass per simulation, no model fitted.
* data subset and bootstrap: the estimate over the subset / resample of rows with the
  nuisances held fixed (the weighted/multiplier bootstrap of cross-fitted estimators). The
  bootstrap's covariate noise is not supported here (``bootstrap_noise`` must be 0).
* random common cause and the simulated unobserved confounder change the covariates or the
  treatment, so they refit the estimator: ``refit_simulations`` refits for the random common
  cause, and the strongest inferred confounder on the treatment x 3 strengths on the outcome
  for the unobserved one. The refits reuse the LightGBM bins of the covariates
  (:mod:`nuisance`): the unobserved confounder changes no covariate, and the random common
  cause bins only its new column. The three outcome strengths share one flipped treatment,
  so their propensity models (and folds) are the same: fitted once, reused from the memo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from e2i_pipelines.analytics.causal.estimators import EffectScores
from e2i_pipelines.analytics.causal.nuisance import extend
from e2i_pipelines.analytics.causal.refute_linear import flip_threshold

Advance = Callable[[int], None]
Refit = Callable[[object], float]  # CausalFrame -> estimate
RANDOM_COLUMN = "e2i_random_common_cause"


def placebo_effects(scores: EffectScores, n_sims: int, rng: np.random.Generator,
                    advance: Advance) -> np.ndarray:
    """Placebo effects: difference in means of ``scores.residual`` across placebo arms."""
    r = scores.residual
    out = np.empty(n_sims)
    for s in range(n_sims):
        placebo = rng.random(r.size) < 0.5
        out[s] = r[placebo].mean() - r[~placebo].mean()
        advance(1)
    return out


def subset_effects(scores: EffectScores, n_sims: int, fraction: float,
                   rng: np.random.Generator, advance: Advance) -> np.ndarray:
    """Estimates over random subsets of ``fraction`` of the rows (without replacement)."""
    n = scores.a1.size
    m = max(2, int(round(fraction * n)))
    out = np.empty(n_sims)
    for s in range(n_sims):
        out[s] = scores.effect(rng.choice(n, m, replace=False))
        advance(1)
    return out


def bootstrap_effects(scores: EffectScores, n_sims: int, rng: np.random.Generator,
                      advance: Advance) -> np.ndarray:
    """Estimates over bootstrap resamples of the rows (nuisances fixed)."""
    n = scores.a1.size
    out = np.empty(n_sims)
    for s in range(n_sims):
        out[s] = scores.effect(rng.integers(0, n, n))
        advance(1)
    return out


def with_random_common_cause(frame, rng: np.random.Generator):
    """``frame`` with an extra N(0, 1) column in its design (and LightGBM frame)."""
    u = rng.standard_normal(len(frame.data))
    data = frame.data.copy()
    data[RANDOM_COLUMN] = u
    tree = frame.tree_frame.copy()
    tree[RANDOM_COLUMN] = u
    extend(tree, frame.tree_frame, [RANDOM_COLUMN])  # LightGBM bins only the new column
    return replace(frame, data=data, tree_frame=tree,
                   common_causes=[*frame.common_causes, RANDOM_COLUMN],
                   adjustment_set=[*frame.adjustment_set, RANDOM_COLUMN])


def random_common_cause_effects(frame, refit: Refit, n_sims: int, rng: np.random.Generator,
                                advance: Advance) -> np.ndarray:
    """Refits with an added independent N(0, 1) confounder."""
    out = np.empty(n_sims)
    for s in range(n_sims):
        out[s] = refit(with_random_common_cause(frame, rng))
        advance(1)
    return out


def refit_grid(kappa_t: np.ndarray, kappa_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reduced grid refits use: the strongest kappa_t x 3 kappa_y (low, middle, high)."""
    ky = np.unique(np.quantile(kappa_y, [0.0, 0.5, 1.0]))
    return np.array([kappa_t.max()]), ky


def unobserved_effects(frame, refit: Refit, kappa_t: np.ndarray, kappa_y: np.ndarray,
                       rng: np.random.Generator, advance: Advance) -> np.ndarray:
    """(len(kappa_t), len(kappa_y)) refitted effects under a simulated confounder w ~ N(0,1):
    the treatment flips where w >= threshold(kappa_t), the outcome becomes y - kappa_y w
    (DoWhy's direct simulation, binary_flip / linear)."""
    t0 = frame.data[frame.treatment].to_numpy(dtype=bool)
    y0 = frame.data[frame.outcome].to_numpy(dtype=np.float64)
    out = np.empty((len(kappa_t), len(kappa_y)))
    for i, kt in enumerate(kappa_t):
        w = rng.standard_normal(t0.size)
        t_new = t0 ^ (w >= flip_threshold(float(kt)))
        for j, ky in enumerate(kappa_y):
            data = frame.data.copy()
            data[frame.treatment] = t_new
            data[frame.outcome] = y0 - ky * w
            out[i, j] = refit(replace(frame, data=data))
            advance(1)
    return out
