"""Effect estimates: frame preparation, estimator choice, estimate + CI of the spec's target.

The frame adjusts for the spec's adjustment set (``common_causes``, or the set identified from
its ``graph``) plus the effect modifiers as main effects. ``linear_regression`` is DoWhy's
backdoor linear regression with treatment x effect-modifier interactions, so its effect on a
set of rows is ``b_T + sum_j g_j * mean(M_j)`` over those rows (ATE: all rows, ATT: treated,
ATC: controls); it is solved in closed form (:mod:`ols`), and DoWhy's objects are built only
when something asks for them (:class:`DowhyFit`). The other estimators live in
:mod:`estimators`. Categorical covariates (declared in the spec or not numeric) are one-hot
coded with :func:`numeric_design` for regressions and propensity models and kept as
categories for LightGBM; column names are made formula-safe.

:func:`prepare_frame` copies the covariates once, into one column-major float64 matrix; the
DoWhy frame, the LightGBM frame (numeric columns) and :meth:`CausalFrame.effect_data` are
views of it.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import stdtrit

from e2i_pipelines.analytics.causal.estimators import (
    EffectData,
    EffectScores,
    FittedEffect,
    Log,
    fit_scored,
)
from e2i_pipelines.analytics.causal.ols import treatment_ols
from e2i_pipelines.analytics.causal.settings import METHODS, NEEDS_COVARIATES, EstimatorSettings
from e2i_pipelines.analytics.causal.weights import logistic_propensity, target_weights
from e2i_pipelines.core.arrow_memory import release_read_memory
from e2i_pipelines.core.encoding import categorical_columns, numeric_design
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.refs import CausalEstimateRef
from e2i_pipelines.core.spec import CausalSpec, validate_frame
from e2i_pipelines.core.storage import open_file, parquet_file

READ_THREADS_CELLS = 4_000_000
"""Reads of fewer cells (rows x columns) decode on the calling thread: at 100k rows, 2 columns
took 3.2 ms against 6.2 ms with Arrow's pool, 32 columns 23 ms against 28 ms (medians of 7
fresh processes)."""


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
    _arrays: EffectData | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def randomised(self) -> bool:
        """No confounder to adjust for (a randomised experiment, or a graph that says so)."""
        return not self.adjustment_set

    def effect_data(self) -> EffectData:
        """The estimators' arrays (built once per frame; views of ``data`` where possible)."""
        if self._arrays is None:
            object.__setattr__(self, "_arrays", EffectData(
                t=self.data[self.treatment].to_numpy(dtype=bool),
                y=self.data[self.outcome].to_numpy(dtype=np.float64),
                X=column_matrix(self.data, self.common_causes), names=list(self.common_causes),
                tree_frame=self.tree_frame, target=self.target))
        return self._arrays


def column_matrix(df: pd.DataFrame, columns: list[str], extra: int = 0) -> np.ndarray:
    """``df[columns]`` as a column-major float64 matrix (one contiguous copy per column),
    with ``extra`` columns left unset after them."""
    out = np.empty((len(df), len(columns) + extra), order="F")
    for j, col in enumerate(columns):
        out[:, j] = df[col].to_numpy()
    return out


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


def check_dataset_columns(dataset: Any, file: Any = None) -> None:
    """Raise DataValidationError when the dataset file (``file``: its open ParquetFile, if
    the caller has one) lacks a column of its spec (cheap: the footer's schema)."""
    spec: CausalSpec = dataset.spec
    spec.check_roles()
    names = set((file or parquet_file(dataset.path)).schema_arrow.names)
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
    file = parquet_file(dataset.path)
    check_dataset_columns(dataset, file)
    spec: CausalSpec = dataset.spec
    columns = list(dict.fromkeys(
        [*spec.required_columns, *([spec.id_column] if spec.id_column else [])]))
    # one pandas block per column on Arrow's buffers (no consolidating copy of every column);
    # Arrow's thread pool only for large reads (its fan-out costs more than it saves below)
    threads = file.metadata.num_rows * len(columns) >= READ_THREADS_CELLS
    df = file.read(columns=columns, use_threads=threads).to_pandas(
        split_blocks=True, self_destruct=True)
    if 0 < max_rows < len(df):
        df = df.sample(n=max_rows, random_state=seed).reset_index(drop=True)
    return df


def dataset_frame(dataset: Any, max_rows: int, seed: int) -> CausalFrame:
    """:func:`read_dataset_frame` then :func:`prepare_frame`: the frame the estimators fit.

    The frame holds its own copies, so the Arrow buffers of the read are returned to the OS
    before any model is fitted on it (aipw at 1M rows: ~300 MiB less at its peak)."""
    frame = prepare_frame(read_dataset_frame(dataset, max_rows, seed), dataset.spec)
    release_read_memory()
    return frame


def prepare_frame(df: pd.DataFrame, spec: CausalSpec) -> CausalFrame:
    """Validate ``df`` against ``spec`` and build the DoWhy frame (raises DataValidationError)."""
    validate_frame(df, spec)
    covariates = list(dict.fromkeys([*spec.adjustment_set, *spec.effect_modifiers]))
    cats = categorical_columns(df, covariates, spec.categorical)
    numeric = [c for c in covariates if c not in cats]
    # one-hot columns after the numeric ones, as numeric_design(df, covariates) orders them
    dummies = numeric_design(df, cats, cats) if cats else None
    one_hot = [] if dummies is None else list(dummies.columns)
    design = [*numeric, *one_hot]
    X = column_matrix(df, numeric, extra=len(one_hot))
    if dummies is not None:
        X[:, len(numeric):] = dummies.to_numpy(dtype=np.float64)
    constant = [design[j] for j in np.flatnonzero(np.ptp(X, axis=0) == 0)]
    if constant:
        raise DataValidationError(f"covariate design column(s) {constant} are constant")
    em_set = set(spec.effect_modifiers)
    em_design = [c for c in design if _source_column(c, covariates) in em_set]
    names = _safe_names(design, set())
    safe = [names[c] for c in design]
    data = pd.DataFrame(X, columns=safe, copy=False)
    t_name = _safe_names([spec.treatment], set(safe))[spec.treatment]
    y_name = _safe_names([spec.outcome], set(safe) | {t_name})[spec.outcome]
    t = df[spec.treatment].to_numpy().astype(bool)
    y = df[spec.outcome].to_numpy().astype(np.float64)
    data[t_name] = t
    data[y_name] = y
    tree = _tree_frame(df, X[:, :len(numeric)], numeric, covariates, cats)
    frame = CausalFrame(
        data=data, treatment=t_name, outcome=y_name, common_causes=safe,
        effect_modifiers=[names[c] for c in em_design],
        source_columns={v: k for k, v in names.items()},
        adjustment_set=list(spec.adjustment_set), modifier_columns=list(spec.effect_modifiers),
        tree_frame=tree, categorical=cats, target=spec.target,
    )
    object.__setattr__(frame, "_arrays", EffectData(
        t=t, y=y, X=X, names=safe, tree_frame=tree, target=spec.target))
    return frame


def _tree_frame(df: pd.DataFrame, X_numeric: np.ndarray, numeric: list[str],
                covariates: list[str], cats: list[str]) -> pd.DataFrame:
    """Covariates for LightGBM nuisances in spec order: the numeric ones as a view of the
    design matrix, categoricals as pandas categories."""
    out = pd.DataFrame(X_numeric, columns=numeric, copy=False)
    out.index = pd.RangeIndex(len(df))
    for c in cats:
        out.insert(covariates.index(c), c, pd.Categorical(df[c].astype(str).to_numpy()))
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


class DowhyFit(Sequence):
    """(CausalModel, identified estimand, CausalEstimate) of a frame's linear regression,
    fitted by DoWhy on first access: the estimate itself is closed-form, and only the callers
    that use DoWhy's objects (the linear refuters' identification, tests) pay for them."""

    def __init__(self, frame: CausalFrame):
        self._frame = frame
        self._fit: tuple[Any, Any, Any] | None = None

    def __getitem__(self, index: Any) -> Any:
        if self._fit is None:
            self._fit = fit_dowhy(self._frame)
        return self._fit[index]

    def __len__(self) -> int:
        return 3


def target_rows(frame: CausalFrame) -> np.ndarray | None:
    """Rows the target averages over: None (all), the treated (att) or the controls (atc)."""
    t = frame.effect_data().t
    return {"ate": None, "att": t, "atc": ~t}[frame.target]


def _linear_fit(frame: CausalFrame, settings: EstimatorSettings) -> tuple[FittedEffect, Any]:
    """DoWhy's backdoor linear regression, solved in closed form (:mod:`ols`).

    The effect over a set of rows is ``c'b``: 1 on the treatment coefficient and mean(M_j)
    over the rows on each interaction, with the OLS covariance.
    """
    data = frame.effect_data()
    position = {name: j for j, name in enumerate(frame.common_causes)}
    modifiers = [position[m] for m in frame.effect_modifiers]
    try:
        ols = treatment_ols(data.t, data.y, data.X, modifiers)
    except ValueError as exc:
        raise DataValidationError(f"linear_regression: {exc}") from exc
    first, M = 2 + data.X.shape[1], data.X[:, modifiers]

    def contrast(rows: np.ndarray | None) -> tuple[float, float]:
        c = np.zeros(len(ols.beta))
        c[1] = 1.0
        if modifiers:
            c[first:] = (M if rows is None else M[rows]).mean(axis=0)
        return ols.contrast(c)

    rows = target_rows(frame)
    value, se = contrast(rows)
    q = stdtrit(ols.dof, 0.5 + settings.confidence_level / 2)  # Student-t quantile

    def effect_on(mask: np.ndarray) -> tuple[float, float]:
        return contrast(mask if rows is None else mask & rows)

    result = FittedEffect(
        method="linear_regression", target=frame.target, estimate=value, se=se,
        ci_low=value - q * se, ci_high=value + q * se, scores=None,
        details={"se_type": "OLS", "dof": ols.dof}, effect_on=effect_on)
    return result, DowhyFit(frame)


def fit_effect(frame: CausalFrame, method: str, settings: EstimatorSettings,
               log: Log | None = None) -> tuple[FittedEffect, Any]:
    """Fit ``method`` (resolved); returns the fit and, for linear regression, DoWhy's objects
    (a :class:`DowhyFit`, fitted when first used)."""
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
    return dataset_frame(ref.dataset, ref.max_rows, ref.seed)


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
