"""The five refutations of a causal estimate, their statistics and pass rules.

Definitions follow DoWhy 0.14's refuters (``dowhy/causal_refuters``); p-values use DoWhy's own
``test_significance`` (two-sided bootstrap-percentile test with >= 100 simulations, a normal
test below that), so the statistics are DoWhy's by construction. Pass rules
(alpha = ``significance_level``, default 0.05):

* ``placebo_treatment``: the treatment is replaced by a Bernoulli(0.5) placebo and the effect
  re-estimated per simulation. p = how plausible an effect of exactly 0 is within the placebo
  effects. **Passes when p > alpha** (the placebo effect is not distinguishable from 0).
* ``random_common_cause``: an independent N(0, 1) column is added to the adjustment set.
  p = how plausible the original estimate is within the new effects. **Passes when p > alpha.**
* ``data_subset``: re-estimated on random subsets (``subset_fraction`` of the rows, without
  replacement). **Passes when p > alpha.**
* ``bootstrap``: re-estimated on bootstrap resamples with DoWhy's measurement noise
  (N(0, (noise * sd)^2) on every covariate). **Passes when p > alpha.**
* ``unobserved_common_cause`` (sensitivity): a simulated confounder w ~ N(0, 1) flips the
  treatment with probability kappa_t and shifts the outcome by -kappa_y * w, over DoWhy's
  default grid (strengths up to the strongest observed confounder times
  ``strength_fraction``). Reports the range of effects (the bound) and, at the strongest
  kappa_t, the kappa_y that would move the effect to 0. **Passes when the effect keeps the
  estimate's sign at every grid point.**

Engines: ``fast`` (linear regression, :mod:`refute_linear`: all simulations from sufficient
statistics) or ``dowhy`` (DoWhy's refuters, ``n_jobs`` parallel; used for propensity-score
weighting, which is not accelerated).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from e2i_pipelines.analytics.causal import refute_linear as fast
from e2i_pipelines.analytics.causal.estimate import CausalFrame
from e2i_pipelines.analytics.causal.refute_dowhy import (
    default_strength_grid,
    dowhy_refute,
    dowhy_unobserved_effect,
)

REFUTERS = ("placebo_treatment", "random_common_cause", "data_subset", "bootstrap",
            "unobserved_common_cause")
FAST_METHODS = {"linear_regression"}


@dataclass(frozen=True)
class RefuterSettings:
    """How the refuters run (defaults are DoWhy's)."""

    num_simulations: int = 100
    subset_fraction: float = 0.8
    bootstrap_noise: float = 0.1
    significance_level: float = 0.05
    strength_fraction: float = 1.0
    grid_points: int = 10
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.num_simulations <= 0:
            raise ValueError(f"num_simulations must be > 0, got {self.num_simulations}")
        if not 0 < self.subset_fraction < 1:
            raise ValueError(f"subset_fraction must be in (0, 1), got {self.subset_fraction}")
        if not 0 <= self.bootstrap_noise <= 1:
            raise ValueError(f"bootstrap_noise must be in [0, 1], got {self.bootstrap_noise}")
        if not 0 < self.significance_level < 1:
            raise ValueError(
                f"significance_level must be in (0, 1), got {self.significance_level}")
        if self.strength_fraction <= 0:
            raise ValueError(f"strength_fraction must be > 0, got {self.strength_fraction}")
        if self.grid_points < 1:
            raise ValueError(f"grid_points must be >= 1, got {self.grid_points}")


@dataclass
class RefutationResult:
    """One refutation: what it found and whether the estimate survived."""

    name: str
    engine: str
    estimate: float
    new_effect: float  # mean simulated effect (unobserved: effect at the strongest grid point)
    passed: bool
    rule: str
    seconds: float
    p_value: float | None = None
    simulations: np.ndarray | None = None  # simulated effects (fast engine)
    details: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster check metadata."""
        out: dict[str, Any] = {
            "engine": self.engine, "estimate": self.estimate, "new_effect": self.new_effect,
            "rule": self.rule, "seconds": round(self.seconds, 3),
        }
        if self.p_value is not None:
            out["p_value"] = self.p_value
        if self.simulations is not None:
            out["num_simulations"] = int(self.simulations.size)
            out["simulated_sd"] = float(np.std(self.simulations))
        out.update(self.details)
        return out


def p_value(value: float, simulations: np.ndarray) -> float:
    """DoWhy's test_significance p-value of ``value`` within ``simulations``."""
    from dowhy.causal_refuter import SignificanceTestType, test_significance

    result = test_significance(SimpleNamespace(value=value), np.asarray(simulations),
                               SignificanceTestType.AUTO)
    return float(result["p_value"])


def _simulated(name: str, estimate: float, effects: np.ndarray, alpha: float, engine: str,
               seconds: float) -> RefutationResult:
    reference = 0.0 if name == "placebo_treatment" else estimate
    p = p_value(reference, effects)
    what = "0" if name == "placebo_treatment" else "the estimate"
    return RefutationResult(
        name=name, engine=engine, estimate=estimate, new_effect=float(np.mean(effects)),
        passed=p > alpha, p_value=p, simulations=effects, seconds=seconds,
        rule=f"pass when p > {alpha} for {what} within the simulated effects",
    )


def _unobserved(estimate: float, grid: np.ndarray, kappa_t: np.ndarray, kappa_y: np.ndarray,
                engine: str, seconds: float, zero_kappa_y: float | None) -> RefutationResult:
    sign = np.sign(estimate)
    passed = bool(np.all(np.sign(grid) == sign))
    details: dict[str, Any] = {
        "bound_low": float(grid.min()), "bound_high": float(grid.max()),
        "kappa_t_max": float(kappa_t.max()), "kappa_y_range": [float(kappa_y.min()),
                                                               float(kappa_y.max())],
        "grid_points": int(grid.size),
    }
    if zero_kappa_y is not None:
        details["kappa_y_to_zero_at_kappa_t_max"] = zero_kappa_y
    strongest = grid[int(np.argmax(kappa_t))]
    worst = strongest[np.argmin(sign * strongest)]
    return RefutationResult(
        name="unobserved_common_cause", engine=engine, estimate=estimate,
        new_effect=float(worst), passed=passed, seconds=seconds, simulations=grid.ravel(),
        rule="pass when every effect over the confounder-strength grid keeps the estimate's sign",
        details=details,
    )


def run_refuters(frame: CausalFrame, fitted: tuple[Any, Any, Any], method: str,
                 settings: RefuterSettings,
                 advance: Callable[[int], None] | None = None,
                 only: tuple[str, ...] = REFUTERS) -> list[RefutationResult]:
    """Run the refuters named in ``only``; ``advance(n)`` is called as simulations finish."""
    unknown = set(only) - set(REFUTERS)
    if unknown:
        raise ValueError(f"unknown refuter(s) {sorted(unknown)}; expected {REFUTERS}")
    model, estimand, estimate_obj = fitted
    estimate = float(estimate_obj.value)
    step = advance or (lambda _n: None)
    s, alpha = settings.num_simulations, settings.significance_level
    results = []
    if method in FAST_METHODS:
        problem = fast.LinearProblem.from_frame(
            frame.data, frame.treatment, frame.outcome, list(estimand.get_adjustment_set()),
            list(estimate_obj.estimator._effect_modifier_names or []))
        runs: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
            "placebo_treatment": lambda g: fast.placebo_effects(problem, s, g, step),
            "random_common_cause": lambda g: fast.random_common_cause_effects(problem, s, g, step),
            "data_subset": lambda g: fast.subset_effects(problem, s, settings.subset_fraction, g,
                                                         step),
            "bootstrap": lambda g: fast.bootstrap_effects(problem, s, settings.bootstrap_noise, g,
                                                          step),
        }
    for i, name in enumerate(only):
        started = time.perf_counter()
        rng = np.random.default_rng([settings.seed, i])
        if name == "unobserved_common_cause":
            kt, ky = default_strength_grid(_grid_sample(frame, settings.seed), estimand,
                                           frame.treatment, frame.outcome,
                                           settings.strength_fraction, settings.grid_points)
            if method in FAST_METHODS:
                grid = fast.unobserved_confounder_effects(problem, kt, ky, rng)
                zero = _zero_crossing(grid[int(np.argmax(kt))], ky)
                engine = "fast"
            else:
                grid = np.array([[dowhy_unobserved_effect(model, estimand, estimate_obj, a, b)
                                  for b in ky] for a in kt])
                zero, engine = _zero_crossing(grid[int(np.argmax(kt))], ky), "dowhy"
            step(s)  # progress counts the sensitivity grid as one refuter's worth
            results.append(_unobserved(estimate, grid, kt, ky, engine,
                                       time.perf_counter() - started, zero))
        elif method in FAST_METHODS:
            effects = runs[name](rng)
            results.append(_simulated(name, estimate, effects, alpha, "fast",
                                      time.perf_counter() - started))
        else:
            mean, p = dowhy_refute(name, model, estimand, estimate_obj, num_simulations=s,
                                   subset_fraction=settings.subset_fraction,
                                   noise=settings.bootstrap_noise, n_jobs=settings.n_jobs,
                                   random_seed=settings.seed + i)
            step(s)
            reference = "0" if name == "placebo_treatment" else "the estimate"
            results.append(RefutationResult(
                name=name, engine="dowhy", estimate=estimate, new_effect=mean, p_value=p,
                passed=p > alpha, seconds=time.perf_counter() - started,
                rule=f"pass when p > {alpha} for {reference} within the simulated effects"))
    return results


GRID_SAMPLE_ROWS = 100_000


def _grid_sample(frame: CausalFrame, seed: int) -> Any:
    """Rows DoWhy's strength inference runs on: a seeded sample of at most 100k rows.

    The inferred strengths are population quantities (flip rates, correlations); a 100k
    sample pins them to ~1e-3 while DoWhy's logistic fit on 1M rows takes ~15 s.
    """
    data = frame.data
    return data if len(data) <= GRID_SAMPLE_ROWS else data.sample(GRID_SAMPLE_ROWS,
                                                                   random_state=seed)


def _zero_crossing(effects: np.ndarray, kappa_y: np.ndarray) -> float | None:
    """kappa_y at which the (linear in kappa_y) effect reaches 0, from two grid points."""
    if kappa_y.size < 2 or effects[-1] == effects[0]:
        return None
    slope = (effects[-1] - effects[0]) / (kappa_y[-1] - kappa_y[0])
    return float(kappa_y[0] - effects[0] / slope)
