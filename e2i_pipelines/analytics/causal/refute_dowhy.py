"""DoWhy's own refuters (the fallback engine and the benchmark's reference side).

Each call runs DoWhy's public ``CausalModel.refute_estimate`` with the same settings the fast
engine reproduces; only the summary (mean new effect, p-value) is available from DoWhy.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

DOWHY_METHODS = {
    "placebo_treatment": "placebo_treatment_refuter",
    "random_common_cause": "random_common_cause",
    "data_subset": "data_subset_refuter",
    "bootstrap": "bootstrap_refuter",
}


def dowhy_refute(name: str, model: Any, estimand: Any, estimate: Any, *, num_simulations: int,
                 subset_fraction: float = 0.8, noise: float = 0.1, n_jobs: int = 1,
                 random_seed: int | None = None) -> tuple[float, float]:
    """(mean new effect, p-value) of DoWhy's refuter ``name`` (see :data:`DOWHY_METHODS`)."""
    kwargs: dict[str, Any] = {"num_simulations": num_simulations, "n_jobs": n_jobs}
    if random_seed is not None:
        kwargs["random_seed"] = random_seed
    if name == "data_subset":
        kwargs["subset_fraction"] = subset_fraction
    if name == "bootstrap":
        kwargs["noise"] = noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.refute_estimate(estimand, estimate, method_name=DOWHY_METHODS[name],
                                       **kwargs)
    return float(result.new_effect), float(result.refutation_result["p_value"])


def dowhy_unobserved_effect(model: Any, estimand: Any, estimate: Any, kappa_t: float,
                            kappa_y: float) -> float:
    """DoWhy's add_unobserved_common_cause at one (kappa_t, kappa_y) point (direct simulation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = model.refute_estimate(
            estimand, estimate, method_name="add_unobserved_common_cause",
            simulation_method="direct-simulation", confounders_effect_on_treatment="binary_flip",
            confounders_effect_on_outcome="linear", effect_strength_on_treatment=float(kappa_t),
            effect_strength_on_outcome=float(kappa_y))
    return float(np.asarray(result.new_effect).ravel()[0])


def default_strength_grid(data: Any, estimand: Any, treatment: str, outcome: str,
                          strength_fraction: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    """DoWhy's default confounder-strength grid (kappa_t flip probabilities, kappa_y slopes).

    Inferred from the observed common causes as in DoWhy: kappa_t from how often dropping a
    standardized confounder flips a logistic treatment model's prediction, kappa_y from the
    confounders' correlation with the outcome times sd(y); scaled by ``strength_fraction``.
    """
    from dowhy.causal_refuters.add_unobserved_common_cause import (
        _infer_default_kappa_t,
        _infer_default_kappa_y,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kt = _infer_default_kappa_t(data, estimand, [treatment], "binary_flip",
                                    strength_fraction, points)
        ky = _infer_default_kappa_y(data, estimand, [outcome], "linear", strength_fraction, points)
    return np.atleast_1d(np.asarray(kt, float)), np.atleast_1d(np.asarray(ky, float))
