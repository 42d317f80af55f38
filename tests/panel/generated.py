"""Generated panels with known truth for the panel tests and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class StaggeredPanel:
    """A long panel (unit, time, d, y, x, cluster) and its true effects."""

    df: pd.DataFrame
    true_att: float  # the simple aggregation's estimand: mean effect over treated unit-periods
    true_by_event: dict[int, float]  # mean effect per periods-since-treatment


def staggered(n_units: int = 2000, n_periods: int = 8, cohorts: tuple[int, ...] = (3, 5, 6),
              never_share: float = 0.3, growth: float = 0.5, cohort_slope: float = 0.4,
              pre_trend: float = 0.0, covariate: bool = True, noise: float = 1.0,
              cluster_size: int = 0, cluster_sd: float = 0.0, seed: int = 0) -> StaggeredPanel:
    """Staggered adoption; effect(g, e) = (1 + growth e) (1 + cohort_slope (rank of g)) for
    e = t - g >= 0. ``pre_trend`` adds a linear trend to treated units' outcomes in every
    period (parallel trends violated). ``x`` shifts both adoption and the outcome's trend.
    ``cluster_size`` > 0 groups units into clusters sharing a shock of sd ``cluster_sd`` per
    period (within-cluster correlation)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_units)
    p_treat = (1 - never_share) / (1 + np.exp(-0.8 * x)) * 2 if covariate else \
        np.full(n_units, 1 - never_share)
    treated = rng.random(n_units) < np.clip(p_treat, 0, 0.95)
    g = np.where(treated, rng.choice(cohorts, size=n_units), 0)
    unit = np.repeat(np.arange(n_units), n_periods)
    t = np.tile(np.arange(1, n_periods + 1), n_units)
    gu, xu = g[unit], x[unit]
    e = t - gu
    on = (gu > 0) & (e >= 0)
    rank = np.searchsorted(np.sort(np.array(cohorts)), gu)
    effect = np.where(on, (1 + growth * e) * (1 + cohort_slope * rank), 0.0)
    alpha = rng.normal(size=n_units)[unit]
    y = alpha + 0.3 * t + (0.5 * xu * t / n_periods if covariate else 0.0) + effect
    y = y + pre_trend * t * (gu > 0) + noise * rng.normal(size=len(unit))
    cluster = unit // cluster_size if cluster_size else unit
    if cluster_size and cluster_sd:
        shocks = rng.normal(scale=cluster_sd, size=(int(cluster.max()) + 1, n_periods))
        y = y + shocks[cluster, t - 1]
    df = pd.DataFrame({"unit": unit, "time": t, "d": on.astype(int), "y": y, "x": xu,
                       "g": gu, "cluster": cluster})
    by_event = {int(k): float(v) for k, v in
                pd.Series(effect[on]).groupby(e[on]).mean().items()}
    return StaggeredPanel(df=df, true_att=float(effect[on].mean()), true_by_event=by_event)
