"""Balance, overlap and sensitivity of a saved estimate, and what the diagnostics step writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from e2i_pipelines.analytics.causal.diagnostics import balance as bal
from e2i_pipelines.analytics.causal.diagnostics import overlap as ovl
from e2i_pipelines.analytics.causal.diagnostics import sensitivity as sens
from e2i_pipelines.analytics.causal.estimate import (
    CausalFrame,
    diagnostic_propensity,
    estimate_fit,
    estimate_frame,
)
from e2i_pipelines.analytics.causal.estimators import FittedEffect
from e2i_pipelines.analytics.causal.refuters import RANDOMISED_SKIP
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.outputs import Outputs, Plot
from e2i_pipelines.core.refs import CausalEstimateRef

DIAGNOSTICS = ("covariate_balance", "overlap", "sensitivity")
WARN, ERROR = "WARN", "ERROR"  # check severities (Dagster's AssetCheckSeverity values)


@dataclass
class DiagnosticOutcome:
    """One diagnostic: passed (None when skipped), severity, metadata, plot (file, figure)."""

    name: str
    passed: bool | None
    severity: str
    metadata: dict[str, Any]
    plot: tuple[str, Any] | None = None
    skipped: str | None = None

    def summary(self) -> dict[str, Any]:
        """Plain values for diagnostics.json, MLflow and the API."""
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped,
                "severity": self.severity,
                **{k: v for k, v in self.metadata.items() if k != "table"}}


@dataclass
class DiagnosticsRun:
    """The three outcomes of one estimate, and what is written for them."""

    outcomes: list[DiagnosticOutcome]

    def outputs(self, estimate_run_id: str | None) -> Outputs:
        files: dict[str, Any] = {o.plot[0]: Plot(o.plot[1], o.name) for o in self.outcomes
                                 if o.plot is not None}
        files["diagnostics.json"] = json.dumps([o.summary() for o in self.outcomes], indent=2,
                                               default=json_default)
        return Outputs(files=files,
                       metrics={f"{o.name}_passed": float(o.passed) for o in self.outcomes
                                if o.passed is not None},
                       tags={"estimate_mlflow_run_id": estimate_run_id or ""})


def diagnose_estimate(ref: CausalEstimateRef, log: Any = None) -> DiagnosticsRun:
    """Reload the estimate's frame and fit and diagnose them."""
    frame = estimate_frame(ref)
    fit = estimate_fit(ref)
    if log is not None:
        log(f"diagnosing the {ref.method} estimate over {len(frame.data):,} rows")
    return DiagnosticsRun(run_diagnostics(frame, fit, ref.result.confidence_level))


def run_diagnostics(frame: CausalFrame, fit: FittedEffect, level: float
                    ) -> list[DiagnosticOutcome]:
    """Balance, overlap and sensitivity of ``fit`` on ``frame``, each with its figure."""
    if frame.randomised:
        return [DiagnosticOutcome(n, None, WARN, {"skipped": RANDOMISED_SKIP},
                                  skipped=RANDOMISED_SKIP) for n in DIAGNOSTICS]
    data = frame.effect_data()
    names = [frame.source_columns.get(c, c) for c in data.names]
    e, w = diagnostic_propensity(data, fit)
    outcomes = []

    table = bal.balance_table(data.X, names, data.t, w)
    worst = table.iloc[int(np.argmax(np.abs(table["smd_after"].to_numpy())))]
    outcomes.append(DiagnosticOutcome(
        "covariate_balance", bal.balance_passed(table), WARN,
        {"max_abs_smd_before": float(np.abs(table["smd_before"]).max()),
         "max_abs_smd_after": float(np.abs(table["smd_after"]).max()),
         "worst_covariate": str(worst["covariate"]), "threshold": bal.BALANCE_THRESHOLD,
         "weights": f"{fit.method} weights" if fit.weights is not None
                    else "logistic propensity weights of the target",
         "table": table.round(4)},
        plot=("love_plot.png", bal.love_plot(table))))

    ov = ovl.overlap_summary(e, data.t)
    status = ov["status"]
    outcomes.append(DiagnosticOutcome(
        "overlap", status == "pass", ERROR if status == "fail" else WARN, ov,
        plot=("overlap.png", ovl.overlap_plot(e, data.t))))

    result = sens.sensitivity(data.y, data.t, data.X, names, alpha=1 - level)
    outcomes.append(DiagnosticOutcome(
        "sensitivity", bool(result.passed) if result.passed is not None else None, WARN,
        result.metadata(),
        plot=("sensitivity_contours.png", sens.sensitivity_contour_plot(result))))
    return outcomes
