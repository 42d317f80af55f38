"""Effect estimates: frame preparation, estimator choice, estimate + CI of the spec's target.

The frame adjusts for the spec's adjustment set (``common_causes``, or the set identified from
its ``graph``) plus the effect modifiers as main effects. ``linear_regression`` is DoWhy's
backdoor linear regression with treatment x effect-modifier interactions, so its effect on a
set of rows is ``b_T + sum_j g_j * mean(M_j)`` over those rows (ATE: all rows, ATT: treated,
ATC: controls). The other estimators live in :mod:`estimators`. Categorical covariates
(declared in the spec or not numeric) are one-hot coded with :func:`numeric_design` for
regressions and propensity models and kept as categories for LightGBM; column names are
made formula-safe.
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

from e2i_pipelines.analytics.causal.estimators import (
    EffectData,
    EffectScores,
    EstimatorSettings,
    FittedEffect,
    Log,
    fit_scored,
)
from e2i_pipelines.analytics.causal.weights import logistic_propensity, target_weights
from e2i_pipelines.core.encoding import categorical_columns, numeric_design
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.refs import CausalEstimateRef
from e2i_pipelines.core.spec import CausalSpec, validate_frame
from e2i_pipelines.core.storage import open_file, parquet_file

METHODS: dict[str, str] = {
    "auto": "difference_in_means without confounders, else linear_regression",
    "difference_in_means": "mean(y | T=1) - mean(y | T=0), HC2 CI",
    "linear_regression": "backdoor.linear_regression",
    "propensity_score_weighting": "stabilised Hajek IPW, logistic propensity, optional trim",
    "aipw": "cross-fitted augmented IPW (doubly robust)",
    "dml": "DoubleML partially linear model, cross-fitted",
}
NEEDS_COVARIATES = {"propensity_score_weighting", "aipw", "dml"}


class UnknownEstimatorError(ValueError):
    """An estimator name outside :data:`METHODS`."""


def resolve_method(method: str, frame: CausalFrame) -> str:
    """The estimator to run: ``auto`` resolved, and the method checked against the design."""
    if method not in METHODS:
        raise UnknownEstimatorError(
            f"unknown estimator {method!r}: expected one of {', '.join(METHODS)}")
    if method == "auto":
        return "difference_in_means" if frame.randomised else "linear_regression"
    if method in NEEDS_COVARIATES and not frame.common_causes:
        raise DataValidationError(
            f"method {method!r} needs covariates; the spec has none (a randomised design): "
            "use difference_in_means")
    if method == "dml" and frame.target != "ate":
        raise DataValidationError(
            f"method 'dml' estimates the constant effect of the partially linear model, "
            f"not target {frame.target!r}; use aipw or propensity_score_weighting")
    return method


@dataclass(frozen=True)
class CausalFrame:
    """A DoWhy-ready frame: bool treatment, float outcome, float covariates with safe names."""

    data: pd.DataFrame
    treatment: str
    outcome: str
    common_causes: list[str]  # safe names, every covariate column (main effects)
    effect_modifiers: list[str]  # safe names of the effect-modifier design columns
    source_columns: dict[str, str] = field(default_factory=dict)  # safe name -> design name
    adjustment_set: list[str] = field(default_factory=list)  # spec columns (confounders)
    modifier_columns: list[str] = field(default_factory=list)  # spec effect modifiers
    tree_frame: pd.DataFrame | None = None  # covariates, categoricals as categories
    categorical: list[str] = field(default_factory=list)  # categorical covariates
    target: str = "ate"

    @property
    def randomised(self) -> bool:
        """No confounder to adjust for (a randomised experiment, or a graph that says so)."""
        return not self.adjustment_set

    def effect_data(self) -> EffectData:
        return EffectData(
            t=self.data[self.treatment].to_numpy(dtype=bool),
            y=self.data[self.outcome].to_numpy(dtype=np.float64),
            X=self.data[self.common_causes].to_numpy(dtype=np.float64),
            names=list(self.common_causes), tree_frame=self.tree_frame, target=self.target)


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
    spec: CausalSpec = dataset.spec
    spec.check_roles()
    names = set(parquet_file(dataset.path).schema_arrow.names)
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
    covariates = list(dict.fromkeys([*spec.adjustment_set, *spec.effect_modifiers]))
    design = numeric_design(df, covariates, spec.categorical)
    em_set = set(spec.effect_modifiers)
    em_design = [c for c in design.columns if _source_column(c, covariates) in em_set]
    cats = categorical_columns(df, covariates, spec.categorical)
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
        adjustment_set=list(spec.adjustment_set), modifier_columns=list(spec.effect_modifiers),
        tree_frame=_tree_frame(df, covariates, cats), categorical=cats, target=spec.target,
    )


def _tree_frame(df: pd.DataFrame, covariates: list[str], cats: list[str]) -> pd.DataFrame:
    """Covariates for LightGBM nuisances: categoricals as pandas categories, the rest float."""
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for c in covariates:
        values = df[c].to_numpy()
        out[c] = (pd.Categorical(pd.Series(values).astype(str)) if c in cats
                  else values.astype(np.float64))
    return out


@dataclass(frozen=True)
class EstimateResult:
    """The estimate of the target and how it was obtained (JSON-able)."""

    method: str
    estimate: float
    ci_low: float
    ci_high: float
    confidence_level: float
    n_rows: int
    adjustment_set: list[str]  # spec columns adjusted for as confounders
    effect_modifiers: list[str]
    std_error: float | None = None
    target: str = "ate"
    design: str = "observational"  # or "randomised" (no confounders)
    requested_method: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _quiet_dowhy() -> None:
    for name in ("dowhy", "dowhy.causal_model", "dowhy.causal_estimator",
                 "dowhy.causal_identifier", "dowhy.causal_refuters"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="dowhy")


def dowhy_model(frame: CausalFrame, effect_modifiers: bool = True) -> tuple[Any, Any]:
    """(CausalModel, identified estimand) adjusting for every design column.

    Identification is DoWhy's backdoor "maximal-adjustment" over the design's columns (the
    adjustment set was chosen already, from the spec or its graph); DoWhy's default enumerates
    adjustment sets and took ~50 s for 30 covariates.
    """
    from dowhy import CausalModel

    _quiet_dowhy()
    model = CausalModel(
        data=frame.data, treatment=frame.treatment, outcome=frame.outcome,
        common_causes=frame.common_causes,
        effect_modifiers=frame.effect_modifiers if effect_modifiers else None,
    )
    estimand = model.identify_effect(proceed_when_unidentifiable=True,
                                     method_name="maximal-adjustment")
    return model, estimand


def fit_dowhy(frame: CausalFrame, method: str = "linear_regression", **_: Any
              ) -> tuple[Any, Any, Any]:
    """(CausalModel, identified estimand, CausalEstimate) of DoWhy's linear regression."""
    if method != "linear_regression":
        raise ValueError(f"fit_dowhy fits linear_regression only, not {method!r}")
    model, estimand = dowhy_model(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = model.estimate_effect(
            estimand, method_name=METHODS["linear_regression"],
            method_params={"need_conditional_estimates": False}, confidence_intervals=False)
    return model, estimand, estimate


def linear_contrast(estimate: Any, data: pd.DataFrame, rows: np.ndarray | None = None
                    ) -> tuple[float, float, int]:
    """(effect, std error, residual dof) of the linear-regression effect over ``rows``.

    The effect is ``c'b`` with ``c`` 1 on the treatment coefficient and mean(M_j) over the
    rows on each interaction (DoWhy's ATE when ``rows`` is all rows), from the OLS covariance.
    """
    estimator = estimate.estimator
    ols = estimator.model
    n_adj = len(estimator._observed_common_causes_names)
    ems = list(estimator._effect_modifier_names or [])
    c = np.zeros(len(ols.params))
    c[1] = 1.0
    if ems:
        values = data[ems].to_numpy(dtype=np.float64)
        c[2 + n_adj:] = (values if rows is None else values[rows]).mean(axis=0)
    value = float(c @ ols.params.to_numpy())
    se = float(np.sqrt(c @ ols.cov_params().to_numpy() @ c))
    return value, se, int(ols.df_resid)


def target_rows(frame: CausalFrame) -> np.ndarray | None:
    """Rows the target averages over: None (all), the treated (att) or the controls (atc)."""
    t = frame.data[frame.treatment].to_numpy(dtype=bool)
    return {"ate": None, "att": t, "atc": ~t}[frame.target]


def _linear_fit(frame: CausalFrame, settings: EstimatorSettings) -> tuple[FittedEffect, Any]:
    fitted = fit_dowhy(frame)
    estimate = fitted[2]
    rows = target_rows(frame)
    value, se, dof = linear_contrast(estimate, frame.data, rows)
    q = st.t.ppf(0.5 + settings.confidence_level / 2, dof)

    def effect_on(mask: np.ndarray) -> tuple[float, float]:
        sel = mask if rows is None else mask & rows
        v, s_, _ = linear_contrast(estimate, frame.data, sel)
        return v, s_

    result = FittedEffect(
        method="linear_regression", target=frame.target, estimate=value, se=se,
        ci_low=value - q * se, ci_high=value + q * se, scores=None,
        details={"se_type": "OLS", "dof": dof}, effect_on=effect_on)
    return result, fitted


def fit_effect(frame: CausalFrame, method: str, settings: EstimatorSettings,
               log: Log | None = None) -> tuple[FittedEffect, Any]:
    """Fit ``method`` (resolved); returns the fit and DoWhy's objects (linear regression)."""
    method = resolve_method(method, frame)
    if method == "linear_regression":
        return _linear_fit(frame, settings)
    try:
        fit = fit_scored(method, frame.effect_data(), settings, log)
    except ValueError as exc:
        raise DataValidationError(f"{method}: {exc}") from exc
    return fit, None


def diagnostic_propensity(data: EffectData, fit: FittedEffect) -> tuple[np.ndarray, np.ndarray]:
    """(propensity, balancing weights) the diagnostics use: the estimator's own where it has
    them (weighting, aipw, dml), else a logistic model of the design."""
    if fit.propensity is not None and fit.weights is not None:
        return fit.propensity, fit.weights
    e, _ = logistic_propensity(data.X, data.t)
    return e, target_weights(e, data.t, data.target)


def estimate_effect(frame: CausalFrame, method: str = "auto", confidence_level: float = 0.95,
                    settings: EstimatorSettings | None = None, log: Log | None = None
                    ) -> tuple[EstimateResult, FittedEffect, Any]:
    """Fit the estimate; returns the summary, the fit, and DoWhy's objects (linear only)."""
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    settings = settings or EstimatorSettings(confidence_level=confidence_level)
    fit, dowhy_fit = fit_effect(frame, method, settings, log)
    result = EstimateResult(
        method=fit.method, estimate=float(fit.estimate), ci_low=float(fit.ci_low),
        ci_high=float(fit.ci_high), confidence_level=settings.confidence_level,
        n_rows=len(frame.data), adjustment_set=list(frame.adjustment_set),
        effect_modifiers=list(frame.modifier_columns), std_error=float(fit.se),
        target=frame.target, design="randomised" if frame.randomised else "observational",
        requested_method=method, details=dict(fit.details),
    )
    return result, fit, dowhy_fit



SCORE_FIELDS = ("a1", "b1", "a0", "b0", "residual")
"""Arrays of :class:`EffectScores` saved in scores.npz (with propensity/weights if any)."""


def estimate_frame(ref: CausalEstimateRef) -> CausalFrame:
    """The exact frame a CausalEstimateRef was fitted on (same sample, same encoding)."""
    return prepare_frame(read_dataset_frame(ref.dataset, ref.max_rows, ref.seed),
                         ref.dataset.spec)


def estimate_fit(ref: CausalEstimateRef) -> FittedEffect:
    """The fit of a CausalEstimateRef as saved: estimate, CI, and (score-based estimators)
    scores, propensities and weights; linear regression is refitted from the frame where
    needed."""
    r = ref.result
    scores = propensity = weights = None
    if ref.scores_path:
        with open_file(ref.scores_path) as handle, np.load(handle) as z:
            scores = EffectScores(**{k: z[k] for k in SCORE_FIELDS})
            propensity = z.get("propensity")
            weights = z.get("weights")
    return FittedEffect(method=r.method, target=r.target, estimate=r.estimate,
                        se=r.std_error or 0.0, ci_low=r.ci_low, ci_high=r.ci_high,
                        scores=scores, propensity=propensity, weights=weights)
