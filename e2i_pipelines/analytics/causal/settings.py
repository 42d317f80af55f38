"""Names and settings of the causal estimators and refuters: what a run config checks.

Plain data (no NumPy, SciPy or DoWhy), so a process that only validates run parameters (the
API) does not import the analytics. :mod:`.estimate`, :mod:`.estimators` and :mod:`.refuters`
use these names."""

from __future__ import annotations

from dataclasses import dataclass

METHODS: dict[str, str] = {
    "auto": "difference_in_means without confounders, else linear_regression",
    "difference_in_means": "mean(y | T=1) - mean(y | T=0), HC2 CI",
    "linear_regression": "backdoor.linear_regression",
    "propensity_score_weighting": "stabilised Hajek IPW, logistic propensity, optional trim",
    "aipw": "cross-fitted augmented IPW (doubly robust)",
    "dml": "DoubleML partially linear model, cross-fitted",
}
NEEDS_COVARIATES = {"propensity_score_weighting", "aipw", "dml"}
NUISANCES = ("lightgbm", "linear")


@dataclass(frozen=True)
class EstimatorSettings:
    """Knobs of the estimators (validated by the run config)."""

    confidence_level: float = 0.95
    trim: float = 0.0
    stabilized: bool = True
    propensity_clip: float = 0.01
    folds: int = 5
    nuisance: str = "lightgbm"
    nuisance_trees: int = 100
    seed: int = 0
    n_jobs: int = 1


REFUTERS = ("placebo_treatment", "random_common_cause", "data_subset", "bootstrap",
            "unobserved_common_cause")


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
    refit_simulations: int = 5

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
        if self.refit_simulations < 2:
            raise ValueError(f"refit_simulations must be >= 2, got {self.refit_simulations}")
