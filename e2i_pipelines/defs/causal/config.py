"""Run config of the causal estimate and its refuters, checked before any heavy work."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from e2i_pipelines.analytics.causal.settings import (
    METHODS,
    NUISANCES,
    EstimatorSettings,
    RefuterSettings,
)
from e2i_pipelines.analytics.panel.settings import (
    CS_METHODS,
    DOSE_BASES,
    WILD_WEIGHTS,
    PanelSettings,
)
from e2i_pipelines.analytics.panel.settings import METHODS as PANEL_METHODS

DIAGNOSTIC_CHECKS = ("covariate_balance", "overlap", "sensitivity")
"""Names of the diagnostic checks on causal_estimate (the API tells them from refutations)."""


class CausalEstimateConfig(dg.Config):
    """Estimator, interval, and how the refutation checks run."""

    method: str = Field(
        default="auto", description=f"Estimator: one of {list(METHODS)}; 'auto' is "
        "difference_in_means for a spec without confounders, else linear_regression. "
        f"design: panel takes {list(PANEL_METHODS)} ('auto': callaway_santanna, or "
        "dose_response for a continuous treatment).")
    confidence_level: float = Field(default=0.95, description="Level of the estimate's CI.")
    num_simulations: int = Field(default=100, description="Simulations per refuter.")
    max_rows: int = Field(default=0, description="Seeded row sample (0 = all rows).")
    seed: int = Field(default=0, description="Seed of the row sample and the refuters.")
    subset_fraction: float = Field(default=0.8, description="Rows kept by the subset refuter.")
    bootstrap_noise: float = Field(
        default=0.0, description="Noise (sd fraction) the bootstrap refuter adds to covariates. "
        "0 = a plain bootstrap; DoWhy's default 0.1 weakens the adjustment and so shifts the "
        "effect on large data.")
    significance_level: float = Field(default=0.05, description="alpha of the pass rules.")
    strength_fraction: float = Field(
        default=1.0, description="Unobserved confounder strength, as a multiple of the "
        "strongest observed confounder (DoWhy's frac_strength).")
    grid_points: int = Field(default=10, description="Strengths per axis of the sensitivity grid.")
    trim: float = Field(
        default=0.0, description="Drop rows whose propensity is outside [trim, 1 - trim] "
        "(propensity_score_weighting, aipw); e.g. 0.01. 0 keeps all rows.")
    stabilized: bool = Field(default=True, description="Stabilised weights (weighting).")
    propensity_clip: float = Field(
        default=0.01, description="aipw/dml: propensities are clipped to [clip, 1 - clip].")
    folds: int = Field(default=5, description="Cross-fitting folds (aipw, dml; panel "
                       "dose_response).")
    nuisance: str = Field(default="lightgbm",
                          description=f"Nuisance models of aipw/dml: {list(NUISANCES)}.")
    nuisance_trees: int = Field(default=100, description="Trees per LightGBM nuisance model.")
    refit_simulations: int = Field(
        default=5, description="Refits of the random-common-cause refuter for estimators "
        "other than linear_regression (each refit re-runs the estimator).")
    cate_bins: int = Field(
        default=4, description="Quantile bins per numeric effect modifier (CATE segments).")
    cs_method: str = Field(default="dr", description=f"Panel callaway_santanna ATT(g,t) "
                           f"estimator: {list(CS_METHODS)} (doubly robust, IPW, regression).")
    n_bootstrap: int = Field(default=999, description="Panel: multiplier/wild bootstrap draws "
                             "(uniform bands; wild cluster bootstrap below 30 clusters).")
    wild_weights: str = Field(default="rademacher",
                              description=f"Panel did wild bootstrap weights: {list(WILD_WEIGHTS)}.")
    placebo_shift: int = Field(default=1, description="Panel placebo in time: periods the "
                               "treatment dates move earlier.")
    max_treated_units: int = Field(default=10, description="Panel synthetic control: most "
                                   "treated units accepted.")
    dose_basis: str = Field(default="spline", description="Panel dose_response curve: "
                            f"{list(DOSE_BASES)} (cubic spline, quantile bins, linear only); "
                            "cross-fitting folds: 'folds'.")
    dose_knots: int = Field(default=4, description="Panel dose_response: inner spline knots "
                            "or bin edges at dose quantiles (1..20).")

    def check(self) -> None:
        """Raise dg.Failure naming every invalid field."""
        problems = {
            "method": self.method not in (*METHODS, *PANEL_METHODS),
            "confidence_level": not 0 < self.confidence_level < 1,
            "num_simulations": self.num_simulations <= 0,
            "max_rows": self.max_rows < 0,
            "subset_fraction": not 0 < self.subset_fraction < 1,
            "bootstrap_noise": not 0 <= self.bootstrap_noise <= 1,
            "significance_level": not 0 < self.significance_level < 1,
            "strength_fraction": self.strength_fraction <= 0,
            "grid_points": self.grid_points < 1,
            "trim": not 0 <= self.trim < 0.5,
            "propensity_clip": not 0 < self.propensity_clip < 0.5,
            "folds": not 2 <= self.folds <= 20,
            "nuisance": self.nuisance not in NUISANCES,
            "nuisance_trees": self.nuisance_trees < 1,
            "refit_simulations": self.refit_simulations < 2,
            "cate_bins": not 2 <= self.cate_bins <= 20,
            "cs_method": self.cs_method not in CS_METHODS,
            "n_bootstrap": not 99 <= self.n_bootstrap <= 100_000,
            "wild_weights": self.wild_weights not in WILD_WEIGHTS,
            "placebo_shift": not 1 <= self.placebo_shift <= 100,
            "max_treated_units": self.max_treated_units < 1,
            "dose_basis": self.dose_basis not in DOSE_BASES,
            "dose_knots": not 1 <= self.dose_knots <= 20,
            "bootstrap_noise needs method linear_regression":
                self.bootstrap_noise > 0 and self.method not in ("linear_regression", "auto"),
        }
        bad = {name: getattr(self, name, self.bootstrap_noise)
               for name, wrong in problems.items() if wrong}
        if bad:
            hint = (f" (method must be one of {list(METHODS)}, or for design: panel "
                    f"{list(PANEL_METHODS)})") if "method" in bad else ""
            raise dg.Failure(
                f"causal_estimate config invalid: {bad}{hint}; num_simulations must be > 0, "
                "confidence_level/subset_fraction/significance_level in (0, 1), "
                "bootstrap_noise in [0, 1], max_rows >= 0 (0 = all), trim in [0, 0.5), "
                f"propensity_clip in (0, 0.5), folds 2..20, nuisance in {list(NUISANCES)}, "
                "refit_simulations >= 2, cate_bins 2..20; panel: cs_method in "
                f"{list(CS_METHODS)}, n_bootstrap 99..100000, wild_weights in "
                f"{list(WILD_WEIGHTS)}, placebo_shift 1..100, max_treated_units >= 1, "
                f"dose_basis in {list(DOSE_BASES)}, dose_knots 1..20")

    def refuter_settings(self, n_jobs: int) -> RefuterSettings:
        return RefuterSettings(
            num_simulations=self.num_simulations, subset_fraction=self.subset_fraction,
            bootstrap_noise=self.bootstrap_noise, significance_level=self.significance_level,
            strength_fraction=self.strength_fraction, grid_points=self.grid_points,
            seed=self.seed, n_jobs=n_jobs, refit_simulations=self.refit_simulations)

    def panel_settings(self) -> PanelSettings:
        return PanelSettings(
            confidence_level=self.confidence_level, cs_method=self.cs_method,
            n_bootstrap=self.n_bootstrap, wild_weights=self.wild_weights, seed=self.seed,
            max_treated_units=self.max_treated_units, placebo_shift=self.placebo_shift,
            dose_basis=self.dose_basis, dose_knots=self.dose_knots, folds=self.folds)

    def estimator_settings(self, n_jobs: int) -> EstimatorSettings:
        return EstimatorSettings(
            confidence_level=self.confidence_level, trim=self.trim, stabilized=self.stabilized,
            propensity_clip=self.propensity_clip, folds=self.folds, nuisance=self.nuisance,
            nuisance_trees=self.nuisance_trees, seed=self.seed, n_jobs=n_jobs)


CAUSAL_OP = "causal_estimate"


def planned_estimate(job_def: dg.JobDefinition,
                     run_config: Mapping[str, Any]) -> CausalEstimateConfig | None:
    """The run's causal_estimate config (defaults when not given), None when the run has no
    causal_estimate step; the dataset step checks a panel against it before writing."""
    if not job_def.graph.has_node_named(CAUSAL_OP):
        return None
    raw = ((run_config.get("ops") or {}).get(CAUSAL_OP) or {}).get("config") or {}
    return CausalEstimateConfig(**raw)
