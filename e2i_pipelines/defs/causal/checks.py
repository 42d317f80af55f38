"""Refutations of ``causal_estimate`` as five asset checks (one step, each its own check).

Statistics and pass rules are documented in :mod:`e2i_pipelines.analytics.causal.refuters`; the
linear-regression estimate uses the fast engine, other estimators the score engine
(``engine`` in each check's metadata says which). Refuters that need confounders are skipped
for a randomised design: not evaluated, with the reason logged and in refutations.json.

A panel design (``design: panel``) skips them with the reason and is checked instead by
``panel_checks``: pre-trends and placebo in time (:mod:`e2i_pipelines.analytics.panel.checks`),
which a cross-section skips with the reason.
"""

import json
from collections.abc import Sequence

import dagster as dg

from e2i_pipelines.analytics.causal.refute_plots import simulated_summary
from e2i_pipelines.analytics.causal.refute_run import refute_estimate
from e2i_pipelines.analytics.causal.settings import REFUTERS
from e2i_pipelines.analytics.panel.checks import PANEL_CHECKS, run_checks
from e2i_pipelines.analytics.panel.estimate_run import (
    CROSS_SECTION_SKIP,
    PANEL_DESIGN,
    PANEL_SKIP,
    panel_settings,
    read_panel,
)
from e2i_pipelines.analytics.panel.run import METHODS as PANEL_METHODS
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.outputs import Outputs, Plot, dagster_metadata, write_outputs
from e2i_pipelines.core.plots import png_metadata
from e2i_pipelines.core.refs import CausalEstimateRef
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.assets import causal_estimate
from e2i_pipelines.tiers import Tier, tier_kwargs

_DESCRIPTIONS = {
    "placebo_treatment": "Placebo treatment: the placebo effect must not differ from 0 "
                         "(p > alpha).",
    "random_common_cause": "Random common cause: adding an independent confounder must not "
                           "move the estimate (p > alpha).",
    "data_subset": "Data subset: re-estimating on random subsets must agree (p > alpha).",
    "bootstrap": "Bootstrap with covariate noise: resampled estimates must agree (p > alpha).",
    "unobserved_common_cause": "Sensitivity to an unobserved confounder as strong as the "
                               "strongest observed one: the sign must survive.",
}

CHECK_SPECS = [
    dg.AssetCheckSpec(name=name, asset=causal_estimate, description=_DESCRIPTIONS[name])
    for name in REFUTERS
]


@dg.multi_asset_check(
    specs=CHECK_SPECS,
    name="causal_refutations",
    description="Five DoWhy-equivalent refutations of the causal estimate.",
    can_subset=True,
    ins={"causal_estimate": dg.AssetIn(key=causal_estimate.key)},
    **tier_kwargs(Tier.HEAVY),
)
def causal_refutations(
    context: dg.AssetCheckExecutionContext,
    causal_estimate: CausalEstimateRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
):
    selected = _selected(context, REFUTERS)
    if causal_estimate.result.design == PANEL_DESIGN:
        for name in selected:
            context.log.warning(f"check {name} {PANEL_SKIP}")
        return
    run = refute_estimate(causal_estimate, selected, n_jobs(), context.log)
    written = write_outputs(context, storage, mlflow, "causal_refutations", run.outputs(),
                            name="causal_refutations")
    for r in run.evaluated:
        yield dg.AssetCheckResult(
            check_name=r.name,
            asset_key=causal_estimate_key(),
            passed=r.passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                **dagster_metadata({k: v for k, v in r.metadata().items() if v is not None}),
                **simulated_summary(r),
                "mlflow_run_id": written.run_id,
                "plot": png_metadata(written.pngs[f"{r.name}.png"], r.name),
            },
        )


def causal_estimate_key() -> dg.AssetKey:
    return causal_estimate.key


def _selected(context: dg.AssetCheckExecutionContext, names: Sequence[str]) -> tuple[str, ...]:
    """The checks among ``names`` that this execution was asked for."""
    return tuple(n for n in names
                 if dg.AssetCheckKey(causal_estimate_key(), n) in context.selected_asset_check_keys)


_PANEL_DESCRIPTIONS = {
    "pre_trends": "Pre-trends (design: panel): joint Wald test that the event-study leads are "
                  "0; warns when p < alpha.",
    "placebo_in_time": "Placebo in time (design: panel): treatment dates moved earlier inside "
                       "the pre-period; the placebo effect's CI must cover 0.",
    "placebo_in_space": "Placebo in space (synthetic control/DiD): every donor as a fake "
                        "treated unit (RMSPE-ratio rank p <= alpha) and leave-one-out donors "
                        "keep the sign; for did/callaway_santanna, each cohort left out in "
                        "turn keeps the estimate's sign and significance.",
}


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name=n, asset=causal_estimate, description=_PANEL_DESCRIPTIONS[n])
           for n in PANEL_CHECKS],
    name="panel_checks",
    description="Pre-trends, placebo in time and placebo in space of a panel estimate.",
    can_subset=True,
    ins={"causal_estimate": dg.AssetIn(key=causal_estimate.key)},
    **tier_kwargs(Tier.HEAVY),
)
def panel_checks(
    context: dg.AssetCheckExecutionContext,
    causal_estimate: CausalEstimateRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
):
    selected = _selected(context, PANEL_CHECKS)
    if causal_estimate.result.design != PANEL_DESIGN:
        for name in selected:
            context.log.warning(f"check {name} {CROSS_SECTION_SKIP}")
        return
    settings = panel_settings(causal_estimate.result.details)
    outcomes = run_checks(read_panel(causal_estimate.dataset), causal_estimate.method, settings,
                          PANEL_METHODS, only=selected)
    files = {f"{o.name}.png": Plot(o.figure, o.name) for o in outcomes if o.figure is not None}
    files["panel_checks.json"] = json.dumps([o.summary() for o in outcomes], indent=2,
                                            default=json_default)
    written = write_outputs(context, storage, mlflow, "panel_checks", Outputs(
        files=files, metrics={f"{o.name}_passed": float(o.passed) for o in outcomes
                              if o.passed is not None},
        tags={"estimate_mlflow_run_id": causal_estimate.mlflow_run_id or ""}),
        name="panel_checks")
    for o in outcomes:
        if o.skipped:
            context.log.warning(f"check {o.name} skipped: {o.skipped}")
            continue
        metadata = {**dagster_metadata({k: v for k, v in o.metadata.items() if v is not None}),
                    "mlflow_run_id": written.run_id}
        if o.figure is not None:
            metadata["plot"] = png_metadata(written.pngs[f"{o.name}.png"], o.name)
        yield dg.AssetCheckResult(check_name=o.name, asset_key=causal_estimate_key(),
                                  passed=bool(o.passed), severity=dg.AssetCheckSeverity.WARN,
                                  metadata=metadata)


asset_checks = [causal_refutations, panel_checks]
