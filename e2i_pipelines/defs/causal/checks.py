"""Refutations of ``causal_estimate`` as five asset checks (one step, each its own check).

Statistics and pass rules are documented in :mod:`e2i_pipelines.analytics.causal.refuters`; the
linear-regression estimate uses the fast engine, other estimators the score engine
(``engine`` in each check's metadata says which). Refuters that need confounders are skipped
for a randomised design: not evaluated, with the reason logged and in refutations.json.
"""

import json
from dataclasses import replace

import dagster as dg

from e2i_pipelines.analytics.causal.estimate import fit_dowhy, fit_effect
from e2i_pipelines.analytics.causal.refute_plots import (
    panel_figure,
    refutation_figure,
    simulated_summary,
)
from e2i_pipelines.analytics.causal.refuters import REFUTERS, refuter_units, run_refuters
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.plots import figure_png, png_metadata
from e2i_pipelines.core.progress import Progress
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.assets import CausalEstimateRef, causal_estimate
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
    import mlflow as mlf

    selected = tuple(name for name in REFUTERS
                     if dg.AssetCheckKey(causal_estimate_key(), name)
                     in context.selected_asset_check_keys)
    ref = causal_estimate
    settings = replace(ref.settings, n_jobs=n_jobs())  # this step's CPU budget
    estimator = replace(ref.estimator, n_jobs=settings.n_jobs)
    frame = ref.load_frame()
    r = ref.result
    fit = ref.load_fit()
    dowhy_fit = fit_dowhy(frame) if ref.method == "linear_regression" else None

    def refit(changed) -> float:
        return float(fit_effect(changed, ref.method, estimator)[0].estimate)

    total = sum(refuter_units(n, ref.method, settings, frame.randomised) for n in selected)
    progress = Progress(context.log, total=max(total, 1), label="refutation simulations",
                        unit="simulations")
    context.log.info(f"refuting the {ref.method} estimate {r.estimate:.4f} with "
                     f"{list(selected)} x {settings.num_simulations} simulations "
                     f"over {len(frame.data):,} rows")
    results = run_refuters(frame, fit, dowhy_fit, settings, progress.advance, only=selected,
                           refit=refit)
    for res in results:
        if res.skipped:
            context.log.warning(f"check {res.name} {res.skipped}")
    evaluated = [res for res in results if not res.skipped]

    final = storage.output_dir(context, name="causal_refutations")
    with storage.atomic_output(final) as tmp:
        if evaluated:
            figure_png(refutation_figure(evaluated), tmp / "refutations.png")
        panels = {r.name: figure_png(panel_figure(r), tmp / f"{r.name}.png", dpi=80)
                  for r in evaluated}
        (tmp / "refutations.json").write_text(json.dumps(
            [{**r.metadata(), "name": r.name, "passed": r.passed} for r in results], indent=2))
    with mlflow.start_run(context, "causal_refutations",
                          tags={"estimate_mlflow_run_id": ref.mlflow_run_id or ""}) as run:
        mlf.log_params({"method": ref.method, "num_simulations": settings.num_simulations,
                        "n_rows": len(frame.data)})
        for r in evaluated:
            mlf.log_metrics({f"{r.name}_new_effect": r.new_effect,
                             f"{r.name}_passed": float(r.passed),
                             **({f"{r.name}_p_value": r.p_value} if r.p_value is not None else {})})
        mlf.log_artifacts(str(final))
        run_id = run.info.run_id

    for r in evaluated:
        yield dg.AssetCheckResult(
            check_name=r.name,
            asset_key=causal_estimate_key(),
            passed=r.passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                **{k: (dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v)
                   for k, v in r.metadata().items() if v is not None},
                **simulated_summary(r),
                "mlflow_run_id": run_id,
                "plot": png_metadata(panels[r.name], r.name),
            },
        )


def causal_estimate_key() -> dg.AssetKey:
    return causal_estimate.key


asset_checks = [causal_refutations]
