"""Settings every panel estimator reads (run config values, checked by the caller)."""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("did", "callaway_santanna", "synthetic_control", "synthetic_did", "dose_response")
"""Panel estimators by config ``method`` (:data:`.run.METHODS` maps them to their code)."""
CONTINUOUS_METHODS = ("dose_response",)
"""Methods for ``treatment_type: continuous`` (the others need a binary treatment)."""
CS_METHODS = ("dr", "ipw", "reg")
"""Callaway-Sant'Anna ATT(g,t) estimators: doubly robust, inverse probability, regression."""
WILD_WEIGHTS = ("rademacher", "webb")
DOSE_BASES = ("spline", "bins", "linear")
"""dose_response curve bases: cubic B-spline, quantile bins, or linear only."""


@dataclass(frozen=True)
class PanelSettings:
    """How a panel estimate is computed (``confidence_level``, bootstrap and seed)."""

    confidence_level: float = 0.95
    cs_method: str = "dr"
    n_bootstrap: int = 999
    wild_weights: str = "rademacher"
    wild_cluster_threshold: int = 30
    seed: int = 0
    max_treated_units: int = 10  # synthetic control (part B)
    placebo_shift: int = 1  # placebo in time: periods the treatment moves earlier
    dose_basis: str = "spline"  # dose_response curve: spline | bins | linear
    dose_knots: int = 4  # dose_response: inner spline knots / bin edges (dose quantiles)
    folds: int = 5  # dose_response cross-fitting folds (whole clusters per fold)

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence_level
