"""Average treatment effect with DoWhy: frame preparation, backdoor identification, estimate + CI.

The estimand adjusts for every covariate of the spec (common causes *and* effect modifiers as
main effects) and, for linear regression, adds treatment x effect-modifier interactions, so the
ATE is ``b_T + sum_j g_j * mean(M_j)`` (what DoWhy's ``estimate_effect`` returns). Categorical
covariates are one-hot coded with :func:`numeric_design`; column names are made formula-safe.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats as st

from e2i_pipelines.core.encoding import numeric_design
from e2i_pipelines.core.spec import CausalSpec, DataValidationError, validate_frame

METHODS: dict[str, str] = {
    "linear_regression": "backdoor.linear_regression",
    "propensity_score_weighting": "backdoor.propensity_score_weighting",
}


class UnknownEstimatorError(ValueError):
    """An estimator name outside :data:`METHODS`."""


def dowhy_method_name(method: str) -> str:
    """DoWhy ``method_name`` for one of our estimator names; unknown names raise."""
    try:
        return METHODS[method]
    except KeyError:
        raise UnknownEstimatorError(
            f"unknown estimator {method!r}: expected one of {', '.join(METHODS)}"
        ) from None


@dataclass(frozen=True)
class CausalFrame:
    """A DoWhy-ready frame: bool treatment, float outcome, float covariates with safe names."""

    data: pd.DataFrame
    treatment: str
    outcome: str
    common_causes: list[str]  # safe names, every covariate column (main effects)
    effect_modifiers: list[str]  # safe names of the effect-modifier design columns
    source_columns: dict[str, str] = field(default_factory=dict)  # safe name -> design name


def _safe_names(columns: list[str], taken: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for col in columns:
        base = re.sub(r"\W+", "_", str(col)).strip("_") or "col"
        if base[0].isdigit():
            base = f"c_{base}"
        name, i = base, 1
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        out[col] = name
    return out


def _source_column(design_column: str, covariates: list[str]) -> str:
    """The covariate a design column came from (itself, or the categorical it one-hot codes)."""
    if design_column in covariates:
        return design_column
    matches = [c for c in covariates if design_column.startswith(f"{c}_")]
    return max(matches, key=len) if matches else design_column


def check_dataset_columns(dataset: Any) -> None:
    """Raise DataValidationError when the dataset file lacks a column of its spec (cheap)."""
    import pyarrow.parquet as pq

    spec: CausalSpec = dataset.spec
    spec.check_roles()
    names = set(pq.read_schema(dataset.path).names)
    wanted = [*spec.required_columns, *([spec.id_column] if spec.id_column else [])]
    missing = [c for c in wanted if c not in names]
    if missing:
        roles = {spec.treatment: "treatment", spec.outcome: "outcome", spec.id_column: "id"}
        named = [f"{roles.get(c, 'covariate')} {c!r}" for c in missing]
        raise DataValidationError(
            f"dataset {dataset.path} has no column for {', '.join(named)}; "
            f"available: {sorted(names)}")


def read_dataset_frame(dataset: Any, max_rows: int, seed: int) -> pd.DataFrame:
    """Columns of ``dataset`` (a DatasetRef) the spec needs; a seeded sample if ``max_rows``."""
    check_dataset_columns(dataset)
    spec: CausalSpec = dataset.spec
    df = dataset.read(columns=list(dict.fromkeys(
        [*spec.required_columns, *([spec.id_column] if spec.id_column else [])])))
    if 0 < max_rows < len(df):
        df = df.sample(n=max_rows, random_state=seed).reset_index(drop=True)
    return df


def prepare_frame(df: pd.DataFrame, spec: CausalSpec) -> CausalFrame:
    """Validate ``df`` against ``spec`` and build the DoWhy frame (raises DataValidationError)."""
    validate_frame(df, spec)
    design = numeric_design(df, spec.covariates)
    em_set = set(spec.effect_modifiers)
    em_design = [c for c in design.columns if _source_column(c, spec.covariates) in em_set]
    constant = [c for c in design.columns if design[c].std() == 0]
    if constant:
        raise DataValidationError(f"covariate design column(s) {constant} are constant")
    names = _safe_names(list(design.columns), set())
    data = design.rename(columns=names).reset_index(drop=True)
    t_name = _safe_names([spec.treatment], set(data.columns))[spec.treatment]
    y_name = _safe_names([spec.outcome], set(data.columns) | {t_name})[spec.outcome]
    data[t_name] = df[spec.treatment].to_numpy().astype(bool)
    data[y_name] = df[spec.outcome].to_numpy().astype(np.float64)
    return CausalFrame(
        data=data,
        treatment=t_name,
        outcome=y_name,
        common_causes=[names[c] for c in design.columns],
        effect_modifiers=[names[c] for c in em_design],
        source_columns={v: k for k, v in names.items()},
    )


@dataclass(frozen=True)
class EstimateResult:
    """The estimate and how it was obtained."""

    method: str
    estimate: float
    ci_low: float
    ci_high: float
    confidence_level: float
    n_rows: int
    adjustment_set: list[str]
    effect_modifiers: list[str]
    std_error: float | None = None


def _quiet_dowhy() -> None:
    for name in ("dowhy", "dowhy.causal_model", "dowhy.causal_estimator",
                 "dowhy.causal_identifier", "dowhy.causal_refuters"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="dowhy")


def fit_dowhy(frame: CausalFrame, method: str, *, ci_simulations: int = 30,
              confidence_level: float = 0.95, with_ci: bool = True) -> tuple[Any, Any, Any]:
    """(CausalModel, identified estimand, CausalEstimate) for ``method`` on ``frame``.

    Identification is DoWhy's backdoor "maximal-adjustment" (all covariates): the default
    enumerates adjustment sets and took ~50 s for 30 covariates. ``with_ci`` asks DoWhy for
    its bootstrap CI (propensity-score weighting only; ``ci_simulations`` refits).
    """
    from dowhy import CausalModel

    _quiet_dowhy()
    method_name = dowhy_method_name(method)
    model = CausalModel(
        data=frame.data, treatment=frame.treatment, outcome=frame.outcome,
        common_causes=frame.common_causes,
        effect_modifiers=frame.effect_modifiers if method == "linear_regression" else None,
    )
    estimand = model.identify_effect(proceed_when_unidentifiable=True,
                                     method_name="maximal-adjustment")
    params: dict[str, Any] = {"need_conditional_estimates": False}
    if method == "propensity_score_weighting":
        params.update(num_simulations=ci_simulations, confidence_level=confidence_level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = model.estimate_effect(estimand, method_name=method_name, method_params=params,
                                         confidence_intervals=with_ci and method != "linear_regression")
    return model, estimand, estimate


def linear_ate_interval(estimate: Any, data: pd.DataFrame,
                        confidence_level: float) -> tuple[float, float, float]:
    """(low, high, std error) of the linear-regression ATE ``c'b`` from the OLS covariance.

    ``c`` is 1 on the treatment coefficient and mean(M_j) on each interaction, which is the
    t-interval DoWhy reports when there are no effect modifiers.
    """
    estimator = estimate.estimator
    ols = estimator.model
    n_adj = len(estimator._observed_common_causes_names)
    ems = list(estimator._effect_modifier_names or [])
    c = np.zeros(len(ols.params))
    c[1] = 1.0
    if ems:
        c[2 + n_adj:] = data[ems].to_numpy(dtype=np.float64).mean(axis=0)
    value = float(c @ ols.params.to_numpy())
    se = float(np.sqrt(c @ ols.cov_params().to_numpy() @ c))
    q = st.t.ppf(0.5 + confidence_level / 2, ols.df_resid)
    return value - q * se, value + q * se, se


def estimate_effect(frame: CausalFrame, method: str, confidence_level: float = 0.95,
                    ci_simulations: int = 30) -> tuple[EstimateResult, tuple[Any, Any, Any]]:
    """Fit the estimate; returns the result and the DoWhy objects for refuters."""
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    fitted = fit_dowhy(frame, method, ci_simulations=ci_simulations,
                       confidence_level=confidence_level)
    _, estimand, estimate = fitted
    se: float | None = None
    if method == "linear_regression":
        low, high, se = linear_ate_interval(estimate, frame.data, confidence_level)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = np.asarray(estimate.get_confidence_intervals(confidence_level=confidence_level))
        low, high = float(ci.ravel()[0]), float(ci.ravel()[-1])
    result = EstimateResult(
        method=method, estimate=float(estimate.value), ci_low=float(low), ci_high=float(high),
        confidence_level=confidence_level, n_rows=len(frame.data),
        adjustment_set=list(estimand.get_adjustment_set()),
        effect_modifiers=list(estimate.estimator._effect_modifier_names or []), std_error=se,
    )
    return result, fitted
