"""Diagnostics of ``causal_estimate`` as asset checks: covariate balance, overlap, sensitivity.

One step (seconds on 1M rows) reads the estimate's frame and its propensities/weights and
yields three check results with plots; pass rules are in
:mod:`e2i_pipelines.analytics.causal.diagnostics`. A randomised design (no confounders) has
nothing to balance or to benchmark against: the checks are then skipped (not evaluated; the
reason is logged, recorded on the estimate and in diagnostics.json).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from e2i_pipelines.analytics.causal.diagnostics import balance as bal
from e2i_pipelines.analytics.causal.diagnostics import overlap as ovl
from e2i_pipelines.analytics.causal.diagnostics import sensitivity as sens
from e2i_pipelines.analytics.causal.estimate import CausalFrame, diagnostic_propensity
from e2i_pipelines.analytics.causal.estimators import FittedEffect
from e2i_pipelines.analytics.causal.refuters import RANDOMISED_SKIP
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.plots import figure_png, png_metadata
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.assets import CausalEstimateRef
from e2i_pipelines.defs.causal.config import DIAGNOSTIC_CHECKS
from e2i_pipelines.tiers import Tier, tier_kwargs

DIAGNOSTICS = DIAGNOSTIC_CHECKS
_DESCRIPTIONS = {
    "covariate_balance": "Standardised mean differences before/after weighting: passes when "
                         f"every |SMD| after weighting is <= {bal.BALANCE_THRESHOLD}.",
    "overlap": f"Propensity overlap: share of rows outside {list(ovl.OVERLAP_BOUNDS)}; pass <= "
               f"{ovl.OVERLAP_WARN_SHARE:.0%}, warn <= {ovl.OVERLAP_FAIL_SHARE:.0%}, else fail.",
    "sensitivity": "Cinelli-Hazlett robustness value; passes when a confounder as strong as "
                   "the strongest observed covariate cannot move the CI to include 0.",
}


CAUSAL_ESTIMATE = dg.AssetKey("causal_estimate")
CHECK_SPECS = [dg.AssetCheckSpec(name=n, asset=CAUSAL_ESTIMATE, description=_DESCRIPTIONS[n])
               for n in DIAGNOSTICS]


@dataclass
class DiagnosticOutcome:
    """One diagnostic: passed (None when skipped), severity, metadata, plot file."""

    name: str
    passed: bool | None
    severity: dg.AssetCheckSeverity
    metadata: dict[str, Any]
    plot: Path | None = None
    skipped: str | None = None

    def summary(self) -> dict[str, Any]:
        """Plain values for estimate.json, MLflow and the API."""
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped,
                "severity": self.severity.value,
                **{k: v for k, v in self.metadata.items() if k != "table"}}


def run_diagnostics(frame: CausalFrame, fit: FittedEffect, out_dir: Path,
                    level: float) -> list[DiagnosticOutcome]:
    """Balance, overlap and sensitivity of ``fit`` on ``frame``; plots written to ``out_dir``."""
    if frame.randomised:
        return [DiagnosticOutcome(n, None, dg.AssetCheckSeverity.WARN, {"skipped": RANDOMISED_SKIP},
                                  skipped=RANDOMISED_SKIP) for n in DIAGNOSTICS]
    data = frame.effect_data()
    names = [frame.source_columns.get(c, c) for c in data.names]
    e, w = diagnostic_propensity(data, fit)
    outcomes = []

    table = bal.balance_table(data.X, names, data.t, w)
    passed = bal.balance_passed(table)
    worst = table.iloc[int(np.argmax(np.abs(table["smd_after"].to_numpy())))]
    outcomes.append(DiagnosticOutcome(
        "covariate_balance", passed, dg.AssetCheckSeverity.WARN,
        {"max_abs_smd_before": float(np.abs(table["smd_before"]).max()),
         "max_abs_smd_after": float(np.abs(table["smd_after"]).max()),
         "worst_covariate": str(worst["covariate"]), "threshold": bal.BALANCE_THRESHOLD,
         "weights": f"{fit.method} weights" if fit.weights is not None
                    else "logistic propensity weights of the target",
         "table": table.round(4)},
        plot=_save(bal.love_plot(table), out_dir / "love_plot.png")))

    ov = ovl.overlap_summary(e, data.t)
    status = ov["status"]
    outcomes.append(DiagnosticOutcome(
        "overlap", status == "pass",
        dg.AssetCheckSeverity.ERROR if status == "fail" else dg.AssetCheckSeverity.WARN, ov,
        plot=_save(ovl.overlap_plot(e, data.t), out_dir / "overlap.png")))

    result = sens.sensitivity(data.y, data.t, data.X, names, alpha=1 - level)
    meta = result.metadata()
    outcomes.append(DiagnosticOutcome(
        "sensitivity", bool(result.passed) if result.passed is not None else None,
        dg.AssetCheckSeverity.WARN, meta,
        plot=_save(sens.sensitivity_contour_plot(result), out_dir / "sensitivity_contours.png")))
    return outcomes


def _save(fig: Any, path: Path) -> Path:
    figure_png(fig, path)
    return path


def check_results(outcomes: list[DiagnosticOutcome], asset_key: dg.AssetKey,
                  final_dir: Path, log: Any) -> list[dg.AssetCheckResult]:
    """AssetCheckResults of the evaluated diagnostics; skipped ones are logged, not yielded."""
    results = []
    for o in outcomes:
        if o.skipped:
            log.warning(f"check {o.name} {o.skipped}")
            continue
        metadata = {k: _meta_value(v) for k, v in o.metadata.items() if v is not None}
        if o.plot is not None:
            png = (final_dir / o.plot.name).read_bytes()
            metadata["plot"] = png_metadata(png, o.name)
        results.append(dg.AssetCheckResult(
            check_name=o.name, asset_key=asset_key, passed=bool(o.passed), severity=o.severity,
            metadata=metadata))
    return results


def _meta_value(value: Any) -> Any:
    if hasattr(value, "to_markdown"):
        return dg.MetadataValue.md(value.to_markdown(index=False))
    if isinstance(value, (list, dict)):
        return dg.MetadataValue.json(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


@dg.multi_asset_check(
    specs=CHECK_SPECS,
    name="causal_diagnostics",
    description="Covariate balance, propensity overlap and closed-form sensitivity of the "
                "causal estimate.",
    can_subset=True,
    ins={"causal_estimate": dg.AssetIn(key=CAUSAL_ESTIMATE)},
    **tier_kwargs(Tier.HEAVY),
)
def causal_diagnostics(
    context: dg.AssetCheckExecutionContext,
    causal_estimate: CausalEstimateRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
):
    import json

    import mlflow as mlf

    ref = causal_estimate
    frame = ref.load_frame()
    fit = ref.load_fit()
    context.log.info(f"diagnosing the {ref.method} estimate over {len(frame.data):,} rows")
    final = storage.output_dir(context, name="causal_diagnostics")
    with storage.atomic_output(final) as tmp:
        outcomes = run_diagnostics(frame, fit, tmp, ref.result.confidence_level)
        (tmp / "diagnostics.json").write_text(json.dumps(
            [o.summary() for o in outcomes], indent=2, default=json_default))
    with mlflow.start_run(context, "causal_diagnostics",
                          tags={"estimate_mlflow_run_id": ref.mlflow_run_id or ""}):
        mlf.log_metrics({f"{o.name}_passed": float(o.passed) for o in outcomes
                         if o.passed is not None})
        mlf.log_artifacts(str(final))
    selected = {k.name for k in context.selected_asset_check_keys}
    for result in check_results(outcomes, CAUSAL_ESTIMATE, final, context.log):
        if result.check_name in selected:
            yield result


asset_checks = [causal_diagnostics]
