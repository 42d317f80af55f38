"""The ``causal_estimate`` asset: the treatment's average effect with DoWhy, with a CI."""

import json
from dataclasses import asdict, dataclass

import dagster as dg

from e2i_pipelines.analytics.causal.estimate import (
    CausalFrame,
    EstimateResult,
    estimate_effect,
    prepare_frame,
    read_dataset_frame,
)
from e2i_pipelines.analytics.causal.refuters import RefuterSettings
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.refs import DatasetRef
from e2i_pipelines.core.spec import DataValidationError
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.config import CausalEstimateConfig
from e2i_pipelines.tiers import Tier, asset_tier_kwargs


@dataclass(frozen=True)
class CausalEstimateRef:
    """The estimate and everything the refutation checks need to rebuild its data."""

    dataset: DatasetRef
    result: EstimateResult
    settings: RefuterSettings
    max_rows: int
    seed: int
    ci_simulations: int
    true_ate: float | None = None
    mlflow_run_id: str | None = None

    @property
    def method(self) -> str:
        return self.result.method

    def load_frame(self) -> CausalFrame:
        """The exact frame the estimate was fitted on (same sample, same encoding)."""
        df = read_dataset_frame(self.dataset, self.max_rows, self.seed)
        return prepare_frame(df, self.dataset.spec)


def load_frame_or_fail(dataset: DatasetRef, max_rows: int, seed: int) -> CausalFrame:
    """Read + validate the dataset; data problems become a dg.Failure naming the column."""
    try:
        return prepare_frame(read_dataset_frame(dataset, max_rows, seed), dataset.spec)
    except DataValidationError as exc:
        raise dg.Failure(description=f"causal_estimate input invalid: {exc}") from exc


@dg.asset(
    group_name="causal",
    description="Average treatment effect (DoWhy backdoor estimate) with its confidence "
                "interval; refuted by five asset checks.",
    **asset_tier_kwargs(Tier.HEAVY),
)
def causal_estimate(
    context: dg.AssetExecutionContext,
    config: CausalEstimateConfig,
    dataset: DatasetRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
) -> dg.Output[CausalEstimateRef]:
    import mlflow as mlf

    config.check()
    frame = load_frame_or_fail(dataset, config.max_rows, config.seed)
    context.log.info(f"estimating the effect of {dataset.spec.treatment!r} on "
                     f"{dataset.spec.outcome!r} with {config.method} over {len(frame.data):,} rows")
    result, _ = estimate_effect(frame, config.method, config.confidence_level,
                                config.ci_simulations)
    truth = (dataset.truth or {}).get("ate")
    true_ate = float(truth) if truth is not None else None
    summary = {**asdict(result), "true_ate": true_ate}

    final = storage.output_dir(context)
    with storage.atomic_output(final) as tmp:
        (tmp / "estimate.json").write_text(json.dumps(summary, indent=2))
    with mlflow.start_run(context, "causal_estimate") as run:
        mlf.log_params({"method": config.method, "confidence_level": config.confidence_level,
                        "n_rows": result.n_rows, "treatment": dataset.spec.treatment,
                        "outcome": dataset.spec.outcome})
        metrics = {"estimate": result.estimate, "ci_low": result.ci_low,
                   "ci_high": result.ci_high}
        if true_ate is not None:
            metrics["true_ate"] = true_ate
        mlf.log_metrics(metrics)
        mlf.log_artifact(str(final / "estimate.json"))
        run_id = run.info.run_id

    ref = CausalEstimateRef(
        dataset=dataset, result=result, settings=config.refuter_settings(n_jobs()),
        max_rows=config.max_rows, seed=config.seed, ci_simulations=config.ci_simulations,
        true_ate=true_ate, mlflow_run_id=run_id,
    )
    context.log.info(f"{config.method}: ATE {result.estimate:.4f} "
                     f"[{result.ci_low:.4f}, {result.ci_high:.4f}]")
    metadata = {
        "estimate": result.estimate, "ci_low": result.ci_low, "ci_high": result.ci_high,
        "confidence_level": result.confidence_level, "method": result.method,
        "n_rows": result.n_rows,
        "adjustment_set": dg.MetadataValue.json(result.adjustment_set),
        "effect_modifiers": dg.MetadataValue.json(result.effect_modifiers),
        "num_simulations": config.num_simulations, "mlflow_run_id": run_id,
        "path": dg.MetadataValue.path(str(final / "estimate.json")),
    }
    if result.std_error is not None:
        metadata["std_error"] = result.std_error
    if true_ate is not None:
        metadata["true_ate"] = true_ate
        metadata["true_ate_in_ci"] = bool(result.ci_low <= true_ate <= result.ci_high)
    return dg.Output(ref, metadata=metadata)


assets = [causal_estimate]
