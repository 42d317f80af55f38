"""The ``causal_estimate`` analysis end to end: read the frame, estimate the target, CATE per
segment, and the outputs to write (estimate.json, scores.npz, cate.png, metadata, MLflow)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.causal.estimate import (
    SCORE_FIELDS,
    CausalFrame,
    EstimateResult,
    dataset_frame,
    estimate_effect,
    resolve_method,
)
from e2i_pipelines.analytics.causal.estimators import FittedEffect
from e2i_pipelines.analytics.causal.refuters import NEEDS_CONFOUNDERS, RANDOMISED_SKIP
from e2i_pipelines.analytics.causal.segments import cate_plot, cate_table
from e2i_pipelines.analytics.causal.settings import EstimatorSettings
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.outputs import FilePath, Outputs, Plot
from e2i_pipelines.core.refs import DatasetRef

CONFOUNDER_CHECKS = (*sorted(NEEDS_CONFOUNDERS), "covariate_balance", "overlap", "sensitivity")
"""Checks a randomised design skips (refuters and diagnostics that need confounders)."""


class EstimateRunError(ValueError):
    """The analysis cannot run; ``stage`` says why ("input invalid", "config invalid",
    "failed")."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def load_frame(dataset: DatasetRef, max_rows: int, seed: int) -> CausalFrame:
    """Read + validate the dataset (EstimateRunError naming the column on bad data)."""
    try:
        return dataset_frame(dataset, max_rows, seed)
    except DataValidationError as exc:
        raise EstimateRunError("input invalid", str(exc)) from exc


@dataclass
class EstimateRun:
    """An estimate with its fit, CATE table, skipped checks and the synthetic truth."""

    dataset: DatasetRef
    frame: CausalFrame
    result: EstimateResult
    fit: FittedEffect
    settings: EstimatorSettings
    cate: pd.DataFrame | None
    skipped: dict[str, str]
    true_value: float | None

    def summary(self) -> dict[str, Any]:
        """estimate.json."""
        return {**asdict(self.result), "true_value": self.true_value,
                "skipped_checks": self.skipped,
                "cate": self.cate.to_dict("records") if self.cate is not None else None}

    def outputs(self, num_simulations: int) -> Outputs:
        """Files, metadata (the keys the API and UI read) and MLflow params/metrics."""
        r, spec = self.result, self.dataset.spec
        files: dict[str, Any] = {
            "estimate.json": json.dumps(self.summary(), indent=2, default=json_default)}
        if self.fit.scores is not None:
            files["scores.npz"] = self._write_scores
        if self.cate is not None and self.cate["estimate"].notna().any():
            files["cate.png"] = Plot(cate_plot(self.cate, r.estimate, spec.target),
                                     "CATE by segment", key="cate_plot")
        metadata: dict[str, Any] = {
            "estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high,
            "std_error": r.std_error, "confidence_level": r.confidence_level,
            "method": r.method, "target": r.target, "design": r.design, "n_rows": r.n_rows,
            "adjustment_set": r.adjustment_set, "effect_modifiers": r.effect_modifiers,
            "estimator_details": r.details, "skipped_checks": self.skipped,
            "num_simulations": num_simulations, "path": FilePath("estimate.json"),
        }
        if spec.graph:
            metadata["adjustment_from"] = "graph (DoWhy backdoor identification)"
        if self.cate is not None:
            metadata["cate"] = self.cate.round(4)
            metadata["cate_records"] = json.loads(
                json.dumps(self.cate.to_dict("records"), default=json_default))
        metrics = {"estimate": r.estimate, "ci_low": r.ci_low, "ci_high": r.ci_high,
                   "std_error": r.std_error}
        if self.true_value is not None:
            t = self.true_value
            metrics["true_value"] = t
            metadata["true_value"] = t
            metadata["true_value_in_ci"] = bool(r.ci_low <= t <= r.ci_high)
            if spec.target == "ate":
                metadata["true_ate"] = t
                metadata["true_ate_in_ci"] = metadata["true_value_in_ci"]
        params = {"method": r.method, "target": spec.target,
                  "confidence_level": self.settings.confidence_level, "n_rows": r.n_rows,
                  "treatment": spec.treatment, "outcome": spec.outcome,
                  "adjustment_set": ",".join(r.adjustment_set)[:500]}
        return Outputs(files=files, metadata=metadata, params=params, metrics=metrics)

    def _write_scores(self, path: Path) -> None:
        fit = self.fit
        extra = {k: v for k, v in (("propensity", fit.propensity), ("weights", fit.weights))
                 if v is not None}
        with open(path, "wb") as fh:  # np.savez(str) would append ".npz" to other names
            np.savez(fh, **{k: getattr(fit.scores, k) for k in SCORE_FIELDS}, **extra)


def run_estimate(dataset: DatasetRef, method: str, settings: EstimatorSettings, *,
                 max_rows: int, seed: int, cate_bins: int,
                 log: Callable[[str], None]) -> EstimateRun:
    """The target effect with its CI by ``method``, and CATE per effect-modifier segment."""
    spec = dataset.spec
    frame = load_frame(dataset, max_rows, seed)
    try:
        method = resolve_method(method, frame)
    except (DataValidationError, ValueError) as exc:
        raise EstimateRunError("config invalid", str(exc)) from exc
    log(f"estimating the {spec.target.upper()} of {spec.treatment!r} on {spec.outcome!r} with "
        f"{method} over {len(frame.data):,} rows; adjustment set {frame.adjustment_set or '[]'}"
        f"{' (randomised design)' if frame.randomised else ''}")
    try:
        result, fit, _ = estimate_effect(frame, method, settings=settings, log=log)
    except DataValidationError as exc:
        raise EstimateRunError("failed", str(exc)) from exc
    log(f"{method}: {spec.target.upper()} {result.estimate:.4f} "
        f"[{result.ci_low:.4f}, {result.ci_high:.4f}]")
    truth = (dataset.truth or {}).get(spec.target)  # synthetic data: the true effect
    cate = None
    if frame.modifier_columns:
        t = frame.data[frame.treatment].to_numpy(dtype=bool)
        cate = cate_table(frame.tree_frame, t, frame.modifier_columns, frame.categorical, fit,
                          cate_bins, settings.confidence_level)
    skipped = {n: RANDOMISED_SKIP for n in CONFOUNDER_CHECKS} if frame.randomised else {}
    return EstimateRun(dataset=dataset, frame=frame, result=result, fit=fit, settings=settings,
                       cate=cate, skipped=skipped,
                       true_value=float(truth) if truth is not None else None)
