"""The ``causal_estimate`` asset: the target effect with a CI, CATE per segment, diagnostics."""

import dagster as dg

from e2i_pipelines.analytics.causal.estimate_run import EstimateRunError, run_estimate
from e2i_pipelines.analytics.causal.settings import REFUTERS
from e2i_pipelines.analytics.panel.estimate_run import (
    PANEL_SKIP,
    estimate_result,
    run_panel_estimate,
)
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.outputs import write_outputs
from e2i_pipelines.core.refs import CausalEstimateRef, DatasetRef
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.config import DIAGNOSTIC_CHECKS, CausalEstimateConfig
from e2i_pipelines.tiers import Tier, asset_tier_kwargs


@dg.asset(
    group_name="causal",
    description="Treatment effect on the spec's target (ATE/ATT/ATC) with its CI, by the "
                "configured estimator; CATE per effect-modifier segment; balance, overlap and "
                "sensitivity checks here, five refutation checks in their own step. "
                "design: panel: did or callaway_santanna (or part B's estimators) with the "
                "event study and cohort table; panel_checks instead of the refuters.",
    **asset_tier_kwargs(Tier.HEAVY),
)
def causal_estimate(
    context: dg.AssetExecutionContext,
    config: CausalEstimateConfig,
    dataset: DatasetRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
):
    config.check()
    settings = config.estimator_settings(n_jobs())
    if dataset.panel is not None:  # the other steps read its cross-section; this the panel
        dataset = dataset.panel
    if dataset.spec.panel:
        return _panel_estimate(context, config, dataset, storage, mlflow)
    try:
        run = run_estimate(dataset, config.method, settings, max_rows=config.max_rows,
                           seed=config.seed, cate_bins=config.cate_bins, log=context.log.info)
    except EstimateRunError as exc:
        raise dg.Failure(description=f"causal_estimate {exc.stage}: {exc}") from exc
    written = write_outputs(context, storage, mlflow, "causal_estimate",
                            run.outputs(config.num_simulations))
    for name, reason in run.skipped.items():
        context.log.warning(f"check {name} {reason}")
    ref = CausalEstimateRef(
        dataset=dataset, result=run.result, settings=config.refuter_settings(n_jobs()),
        estimator=settings, max_rows=config.max_rows, seed=config.seed,
        scores_path=written.path("scores.npz") if run.fit.scores is not None else None,
        true_ate=run.true_value, mlflow_run_id=written.run_id,
    )
    return dg.Output(ref, metadata=written.metadata)


def _panel_estimate(context: dg.AssetExecutionContext, config: CausalEstimateConfig,
                    dataset: DatasetRef, storage: E2IStorage, mlflow: MlflowTracker):
    """design: panel -> the panel estimator (analytics.panel), same outputs and ref."""
    panel_settings = config.panel_settings()
    if config.max_rows:
        context.log.warning("max_rows is ignored for design: panel (a row sample would break "
                            "the panel); every row is used")
    try:
        panel, result = run_panel_estimate(dataset, config.method, panel_settings,
                                           log=context.log.info)
    except EstimateRunError as exc:
        raise dg.Failure(description=f"causal_estimate {exc.stage}: {exc}") from exc
    outputs = result.outputs()
    outputs.metadata["skipped_checks"] = {n: PANEL_SKIP for n in (*REFUTERS, *DIAGNOSTIC_CHECKS)}
    written = write_outputs(context, storage, mlflow, "causal_estimate", outputs)
    ref = CausalEstimateRef(
        dataset=dataset, result=estimate_result(result, panel, panel_settings),
        settings=config.refuter_settings(n_jobs()), estimator=config.estimator_settings(n_jobs()),
        max_rows=0, seed=config.seed, true_ate=result.true_value, mlflow_run_id=written.run_id)
    return dg.Output(ref, metadata=written.metadata)


assets = [causal_estimate]
