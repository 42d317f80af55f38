"""Diagnostics of ``causal_estimate`` as asset checks: covariate balance, overlap, sensitivity.

One step (seconds on 1M rows) reads the estimate's frame and its propensities/weights and
yields three check results with plots; pass rules are in
:mod:`e2i_pipelines.analytics.causal.diagnostics`. A randomised design (no confounders) has
nothing to balance or to benchmark against: the checks are then skipped (not evaluated; the
reason is logged, recorded on the estimate and in diagnostics.json).
"""

import dagster as dg

from e2i_pipelines.analytics.causal.diagnostics import balance as bal
from e2i_pipelines.analytics.causal.diagnostics import overlap as ovl
from e2i_pipelines.analytics.causal.diagnostics.run import DiagnosticOutcome, diagnose_estimate
from e2i_pipelines.analytics.panel.estimate_run import PANEL_DESIGN, PANEL_SKIP
from e2i_pipelines.core.outputs import dagster_metadata, write_outputs
from e2i_pipelines.core.plots import png_metadata
from e2i_pipelines.core.refs import CausalEstimateRef
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
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


def check_result(outcome: DiagnosticOutcome, pngs: dict[str, bytes]) -> dg.AssetCheckResult:
    """The AssetCheckResult of an evaluated diagnostic, with its plot inline."""
    metadata = dagster_metadata({k: v for k, v in outcome.metadata.items() if v is not None})
    if outcome.plot is not None:
        metadata["plot"] = png_metadata(pngs[outcome.plot[0]], outcome.name)
    return dg.AssetCheckResult(
        check_name=outcome.name, asset_key=CAUSAL_ESTIMATE, passed=bool(outcome.passed),
        severity=dg.AssetCheckSeverity(outcome.severity), metadata=metadata)


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
    if causal_estimate.result.design == PANEL_DESIGN:
        for name in sorted(k.name for k in context.selected_asset_check_keys):
            context.log.warning(f"check {name} {PANEL_SKIP}")
        return
    run = diagnose_estimate(causal_estimate, log=context.log.info)
    written = write_outputs(context, storage, mlflow, "causal_diagnostics",
                            run.outputs(causal_estimate.mlflow_run_id), name="causal_diagnostics")
    selected = {k.name for k in context.selected_asset_check_keys}
    for outcome in run.outcomes:
        if outcome.skipped:
            context.log.warning(f"check {outcome.name} {outcome.skipped}")
        elif outcome.name in selected:
            yield check_result(outcome, written.pngs)


asset_checks = [causal_diagnostics]
