"""Refutations of ``causal_estimate`` as five asset checks (one step, each its own check).

Statistics and pass rules are documented in :mod:`e2i_pipelines.analytics.causal.refuters`; the
linear-regression estimate uses the fast engine, other estimators the score engine
(``engine`` in each check's metadata says which). Refuters that need confounders are skipped
for a randomised design: not evaluated, with the reason logged and in refutations.json.
"""

import dagster as dg

from e2i_pipelines.analytics.causal.refute_plots import simulated_summary
from e2i_pipelines.analytics.causal.refute_run import refute_estimate
from e2i_pipelines.analytics.causal.refuters import REFUTERS
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.outputs import dagster_metadata, write_outputs
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
    selected = tuple(name for name in REFUTERS
                     if dg.AssetCheckKey(causal_estimate_key(), name)
                     in context.selected_asset_check_keys)
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


asset_checks = [causal_refutations]
