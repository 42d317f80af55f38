"""The ``causal_estimate`` asset: the target effect with a CI, CATE per segment, diagnostics."""

import json
from dataclasses import asdict, dataclass

import dagster as dg
import numpy as np
import pandas as pd

from e2i_pipelines.analytics.causal.estimate import (
    CausalFrame,
    EstimateResult,
    estimate_effect,
    prepare_frame,
    read_dataset_frame,
    resolve_method,
)
from e2i_pipelines.analytics.causal.estimators import (
    EffectScores,
    EstimatorSettings,
    FittedEffect,
)
from e2i_pipelines.analytics.causal.refuters import (
    NEEDS_CONFOUNDERS,
    RANDOMISED_SKIP,
    RefuterSettings,
)
from e2i_pipelines.analytics.causal.segments import cate_plot, cate_table
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.plots import figure_png, png_metadata
from e2i_pipelines.core.refs import DatasetRef
from e2i_pipelines.core.spec import DataValidationError
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.causal.config import CausalEstimateConfig
from e2i_pipelines.tiers import Tier, asset_tier_kwargs

CONFOUNDER_CHECKS = (*sorted(NEEDS_CONFOUNDERS), "covariate_balance", "overlap", "sensitivity")
"""Checks a randomised design skips (refuters and diagnostics that need confounders)."""


@dataclass(frozen=True)
class CausalEstimateRef:
    """The estimate and everything the refutation checks need to rebuild its fit."""

    dataset: DatasetRef
    result: EstimateResult
    settings: RefuterSettings
    estimator: EstimatorSettings
    max_rows: int
    seed: int
    scores_path: str | None = None  # EffectScores of score-based estimators (.npz)
    true_ate: float | None = None
    mlflow_run_id: str | None = None

    @property
    def method(self) -> str:
        return self.result.method

    def load_frame(self) -> CausalFrame:
        """The exact frame the estimate was fitted on (same sample, same encoding)."""
        df = read_dataset_frame(self.dataset, self.max_rows, self.seed)
        return prepare_frame(df, self.dataset.spec)

    def load_fit(self) -> FittedEffect:
        """The fit as saved: estimate, CI, and (score-based estimators) scores, propensities
        and weights; linear regression is refitted from the frame where needed."""
        r = self.result
        scores = propensity = weights = None
        if self.scores_path:
            with np.load(self.scores_path) as z:
                scores = EffectScores(**{k: z[k] for k in SCORE_FIELDS})
                propensity = z.get("propensity")
                weights = z.get("weights")
        return FittedEffect(method=r.method, target=r.target, estimate=r.estimate,
                            se=r.std_error or 0.0, ci_low=r.ci_low, ci_high=r.ci_high,
                            scores=scores, propensity=propensity, weights=weights)


SCORE_FIELDS = ("a1", "b1", "a0", "b0", "residual")


def load_frame_or_fail(dataset: DatasetRef, max_rows: int, seed: int) -> CausalFrame:
    """Read + validate the dataset; data problems become a dg.Failure naming the column."""
    try:
        return prepare_frame(read_dataset_frame(dataset, max_rows, seed), dataset.spec)
    except DataValidationError as exc:
        raise dg.Failure(description=f"causal_estimate input invalid: {exc}") from exc


def _metadata_table(table: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(table.round(4).to_markdown(index=False))


@dg.asset(
    group_name="causal",
    description="Treatment effect on the spec's target (ATE/ATT/ATC) with its CI, by the "
                "configured estimator; CATE per effect-modifier segment; balance, overlap and "
                "sensitivity checks here, five refutation checks in their own step.",
    **asset_tier_kwargs(Tier.HEAVY),
)
def causal_estimate(
    context: dg.AssetExecutionContext,
    config: CausalEstimateConfig,
    dataset: DatasetRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
):
    import mlflow as mlf

    config.check()
    spec = dataset.spec
    frame = load_frame_or_fail(dataset, config.max_rows, config.seed)
    try:
        method = resolve_method(config.method, frame)
    except (DataValidationError, ValueError) as exc:
        raise dg.Failure(description=f"causal_estimate config invalid: {exc}") from exc
    settings = config.estimator_settings(n_jobs())
    context.log.info(
        f"estimating the {spec.target.upper()} of {spec.treatment!r} on {spec.outcome!r} with "
        f"{method} over {len(frame.data):,} rows; adjustment set {frame.adjustment_set or '[]'}"
        f"{' (randomised design)' if frame.randomised else ''}")
    try:
        result, fit, _ = estimate_effect(frame, method, settings=settings, log=context.log.info)
    except DataValidationError as exc:
        raise dg.Failure(description=f"causal_estimate failed: {exc}") from exc
    context.log.info(f"{method}: {spec.target.upper()} {result.estimate:.4f} "
                     f"[{result.ci_low:.4f}, {result.ci_high:.4f}]")
    truth = (dataset.truth or {}).get(spec.target)  # synthetic data: the true effect
    true_ate = float(truth) if truth is not None else None

    cate = None
    if frame.modifier_columns:
        t = frame.data[frame.treatment].to_numpy(dtype=bool)
        cate = cate_table(frame.tree_frame, t, frame.modifier_columns, frame.categorical, fit,
                          config.cate_bins, settings.confidence_level)
    skipped = {n: RANDOMISED_SKIP for n in CONFOUNDER_CHECKS} if frame.randomised else {}

    final = storage.output_dir(context)
    with storage.atomic_output(final) as tmp:
        summary = {**asdict(result), "true_value": true_ate, "skipped_checks": skipped,
                   "cate": cate.to_dict("records") if cate is not None else None}
        (tmp / "estimate.json").write_text(json.dumps(summary, indent=2, default=json_default))
        scores_path = None
        if fit.scores is not None:
            scores_path = str(final / "scores.npz")
            extra = {k: v for k, v in (("propensity", fit.propensity), ("weights", fit.weights))
                     if v is not None}
            np.savez(tmp / "scores.npz", **{k: getattr(fit.scores, k) for k in SCORE_FIELDS},
                     **extra)
        cate_png = None
        if cate is not None and cate["estimate"].notna().any():
            cate_png = figure_png(cate_plot(cate, result.estimate, spec.target),
                                  tmp / "cate.png")
    with mlflow.start_run(context, "causal_estimate") as run:
        mlf.log_params({"method": method, "target": spec.target,
                        "confidence_level": settings.confidence_level, "n_rows": result.n_rows,
                        "treatment": spec.treatment, "outcome": spec.outcome,
                        "adjustment_set": ",".join(result.adjustment_set)[:500]})
        metrics = {"estimate": result.estimate, "ci_low": result.ci_low,
                   "ci_high": result.ci_high, "std_error": result.std_error}
        if true_ate is not None:
            metrics["true_value"] = true_ate
        mlf.log_metrics(metrics)
        mlf.log_artifacts(str(final))
        run_id = run.info.run_id

    ref = CausalEstimateRef(
        dataset=dataset, result=result, settings=config.refuter_settings(n_jobs()),
        estimator=settings, max_rows=config.max_rows, seed=config.seed,
        scores_path=scores_path, true_ate=true_ate, mlflow_run_id=run_id,
    )
    metadata = {
        "estimate": result.estimate, "ci_low": result.ci_low, "ci_high": result.ci_high,
        "std_error": result.std_error, "confidence_level": result.confidence_level,
        "method": result.method, "target": result.target, "design": result.design,
        "n_rows": result.n_rows,
        "adjustment_set": dg.MetadataValue.json(result.adjustment_set),
        "effect_modifiers": dg.MetadataValue.json(result.effect_modifiers),
        "estimator_details": dg.MetadataValue.json(result.details),
        "skipped_checks": dg.MetadataValue.json(skipped),
        "num_simulations": config.num_simulations, "mlflow_run_id": run_id,
        "path": dg.MetadataValue.path(str(final / "estimate.json")),
    }
    if spec.graph:
        metadata["adjustment_from"] = "graph (DoWhy backdoor identification)"
    if cate is not None:
        metadata["cate"] = _metadata_table(cate)
        metadata["cate_records"] = dg.MetadataValue.json(
            json.loads(json.dumps(cate.to_dict("records"), default=json_default)))
        if cate_png is not None:
            metadata["cate_plot"] = png_metadata(cate_png, "CATE by segment")
    if true_ate is not None:
        metadata["true_value"] = true_ate
        metadata["true_value_in_ci"] = bool(result.ci_low <= true_ate <= result.ci_high)
        if spec.target == "ate":
            metadata["true_ate"] = true_ate
            metadata["true_ate_in_ci"] = metadata["true_value_in_ci"]
    for name, reason in skipped.items():
        context.log.warning(f"check {name} {reason}")
    return dg.Output(ref, metadata=metadata)


assets = [causal_estimate]
