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
statistics) or ``scores`` (every other estimator, :mod:`refute_scores`: placebo, subset and
bootstrap from the estimator's scores with its nuisances held fixed; the random common cause
and the unobserved confounder refit the estimator, ``refit_simulations`` times and on the
strongest confounder x 3 outcome strengths).

Refuters that need observed confounders (random common cause, unobserved common cause) are
**skipped** for a randomised design (no confounders): the result says "skipped: no
confounders (randomised design)" and is neither a pass nor a fail. Placebo, subset and
bootstrap still run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from e2i_pipelines.analytics.causal import refute_linear as fast
from e2i_pipelines.analytics.causal import refute_scores as scored
from e2i_pipelines.analytics.causal.estimate import CausalFrame, dowhy_model
from e2i_pipelines.analytics.causal.estimators import FittedEffect
from e2i_pipelines.analytics.causal.refute_dowhy import default_strength_grid
from e2i_pipelines.analytics.causal.settings import REFUTERS, RefuterSettings

FAST_METHODS = {"linear_regression"}
NEEDS_CONFOUNDERS = {"random_common_cause", "unobserved_common_cause"}
RANDOMISED_SKIP = "skipped: no confounders (randomised design)"


@dataclass
class RefutationResult:
    """One refutation: what it found and whether the estimate survived."""

    name: str
    engine: str
    estimate: float
    new_effect: float | None  # mean simulated effect (unobserved: at the strongest point)
    passed: bool | None  # None when skipped
    rule: str
    seconds: float
    p_value: float | None = None
    simulations: np.ndarray | None = None  # simulated effects (fast engine)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None  # why the refuter did not run

    @classmethod
    def skip(cls, name: str, estimate: float, reason: str) -> RefutationResult:
        return cls(name=name, engine="none", estimate=estimate, new_effect=None, passed=None,
                   rule=reason, seconds=0.0, skipped=reason)

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster check metadata."""
        out: dict[str, Any] = {
            "engine": self.engine, "estimate": self.estimate, "new_effect": self.new_effect,
            "rule": self.rule, "seconds": round(self.seconds, 3),
        }
        if self.skipped:
            out["skipped"] = self.skipped
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


def refuter_units(name: str, method: str, settings: RefuterSettings,
                  randomised: bool) -> int:
    """Progress units refuter ``name`` reports (simulations or refits)."""
    if randomised and name in NEEDS_CONFOUNDERS:
        return 0
    if method in FAST_METHODS:
        return settings.num_simulations
    if name == "random_common_cause":
        return settings.refit_simulations
    if name == "unobserved_common_cause":
        return min(3, settings.grid_points)
    return settings.num_simulations


def run_refuters(frame: CausalFrame, fit: FittedEffect, dowhy_fit: tuple[Any, Any, Any] | None,
                 settings: RefuterSettings,
                 advance: Callable[[int], None] | None = None,
                 only: tuple[str, ...] = REFUTERS,
                 refit: Callable[[CausalFrame], float] | None = None) -> list[RefutationResult]:
    """Run the refuters named in ``only``; ``advance(n)`` is called as simulations finish.

    ``dowhy_fit`` (model, estimand, estimate) is needed for linear regression, ``refit``
    (frame -> estimate) for the other estimators' refitting refuters.
    """
    unknown = set(only) - set(REFUTERS)
    if unknown:
        raise ValueError(f"unknown refuter(s) {sorted(unknown)}; expected {REFUTERS}")
    method, estimate = fit.method, float(fit.estimate)
    step = advance or (lambda _n: None)
    s, alpha = settings.num_simulations, settings.significance_level
    results = []
    fast_engine = method in FAST_METHODS
    if fast_engine:
        _, estimand, estimate_obj = dowhy_fit
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
    else:
        if settings.bootstrap_noise:
            raise ValueError(f"bootstrap_noise > 0 needs method linear_regression, not {method}")
        sc, n_refit = fit.scores, settings.refit_simulations
        runs = {
            "placebo_treatment": lambda g: scored.placebo_effects(sc, s, g, step),
            "random_common_cause": lambda g: scored.random_common_cause_effects(
                frame, refit, n_refit, g, step),
            "data_subset": lambda g: scored.subset_effects(sc, s, settings.subset_fraction, g,
                                                           step),
            "bootstrap": lambda g: scored.bootstrap_effects(sc, s, g, step),
        }
    engine = "fast" if fast_engine else "scores"
    for i, name in enumerate(only):
        started = time.perf_counter()
        rng = np.random.default_rng([settings.seed, i])
        if frame.randomised and name in NEEDS_CONFOUNDERS:
            results.append(RefutationResult.skip(name, estimate, RANDOMISED_SKIP))
        elif name == "unobserved_common_cause":
            estimand = estimand if fast_engine else dowhy_model(frame, False)[1]
            kt, ky = default_strength_grid(_grid_sample(frame, settings.seed), estimand,
                                           frame.treatment, frame.outcome,
                                           settings.strength_fraction, settings.grid_points)
            if fast_engine:
                grid = fast.unobserved_confounder_effects(problem, kt, ky, rng)
                step(s)  # progress counts the sensitivity grid as one refuter's worth
            else:
                kt, ky = scored.refit_grid(kt, ky)
                grid = scored.unobserved_effects(frame, refit, kt, ky, rng, step)
            zero = _zero_crossing(grid[int(np.argmax(kt))], ky)
            results.append(_unobserved(estimate, grid, kt, ky, engine,
                                       time.perf_counter() - started, zero))
        else:
            effects = runs[name](rng)
            results.append(_simulated(name, estimate, effects, alpha, engine,
                                      time.perf_counter() - started))
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
