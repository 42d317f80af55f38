"""Assets ``digital_twins`` (sampled population + fidelity) and ``twin_interventions``."""

import time
from contextlib import nullcontext

import dagster as dg

from e2i_pipelines.analytics.twins.interventions import (
    TargetingError,
    intervention_outputs,
    simulate_policies,
    validate_rule,
)
from e2i_pipelines.analytics.twins.population import (
    MODEL_FILE,
    TWINS_FILE,
    PopulationError,
    TwinSettings,
    make_twins,
)
from e2i_pipelines.analytics.twins.twin_files import iter_parquet_chunks
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.fanout import fanout_metadata, open_fanout
from e2i_pipelines.core.outputs import asset_outputs, write_outputs
from e2i_pipelines.core.progress import Progress
from e2i_pipelines.core.refs import DatasetRef, ModelRef, TwinsRef
from e2i_pipelines.core.storage import E2IStorage, exists
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.twins.config import DigitalTwinsConfig, TwinInterventionsConfig
from e2i_pipelines.tiers import Tier, asset_tier_kwargs


@dg.asset(
    group_name="twins",
    description="Digital twins: N people sampled in chunks from a stratified Gaussian copula "
                "fitted to the dataset (covariates + treatment), with a fidelity report; "
                "six fidelity checks (twins_fidelity) score it against the real data.",
    **asset_tier_kwargs(Tier.HEAVY),
)
def digital_twins(
    context: dg.AssetExecutionContext,
    config: DigitalTwinsConfig,
    dataset: DatasetRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
) -> dg.Output[TwinsRef]:
    config.check()
    fanout = open_fanout(context, config.fan_out)
    settings = TwinSettings(n_twins=config.n_twins, chunk_rows=config.chunk_rows,
                            seed=config.seed, fit_rows=config.fit_rows,
                            grid_size=config.grid_size, min_stratum_rows=config.min_stratum_rows,
                            ks_rows=config.ks_rows)
    progress = Progress(context.log, config.n_twins, "digital twins", every_seconds=0.0)
    try:
        with asset_outputs(context, storage, mlflow, "digital_twins") as out, \
                fanout or nullcontext():
            run = make_twins(dataset, settings, out.folder, log=context.log.info,
                             on_rows=progress.advance, workers=n_jobs(), mapper=fanout)
            out.write(run.outputs())
    except PopulationError as exc:
        raise dg.Failure(f"digital_twins {exc}") from None
    ref = TwinsRef(path=out.path(TWINS_FILE), n_rows=run.written, columns=run.model.columns,
                   treatment=dataset.spec.treatment, model_path=out.path(MODEL_FILE),
                   seed=config.seed, fidelity=run.summary, source_dataset=dataset.path)
    return dg.Output(ref, metadata={**out.metadata, **fanout_metadata(context, fanout)})


def _check_inputs(twins: TwinsRef, model: ModelRef) -> None:
    missing = [c for c in model.feature_names if c not in twins.columns]
    if missing:
        raise dg.Failure(f"outcome model features {missing} are not twin columns {twins.columns}")
    if model.treatment != twins.treatment:
        raise dg.Failure(f"outcome model treatment {model.treatment!r} differs from the twins' "
                         f"treatment {twins.treatment!r}")
    if not exists(twins.path):
        raise dg.Failure(f"twins file {twins.path} does not exist (re-materialize digital_twins)")


@dg.asset(
    group_name="twins",
    description="Simulated interventions on the twins with the outcome model: treat-all "
                "(ATE), targeting rule and status quo vs treat-none, with 95% intervals.",
    **asset_tier_kwargs(Tier.HEAVY),
)
def twin_interventions(
    context: dg.AssetExecutionContext,
    config: TwinInterventionsConfig,
    digital_twins: TwinsRef,
    outcome_model: ModelRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
) -> dg.Output[dict]:
    rule = config.rule()
    _check_inputs(digital_twins, outcome_model)
    head = next(iter_parquet_chunks(digital_twins.path, 256))
    try:
        validate_rule(rule, head)
    except TargetingError as exc:
        raise dg.Failure(f"twin_interventions config: {exc}") from None
    progress = Progress(context.log, digital_twins.n_rows, "intervention simulation",
                        every_seconds=0.0)
    started = time.perf_counter()
    report, kept = simulate_policies(
        digital_twins.path, outcome_model, rule, treatment_column=digital_twins.treatment,
        chunk_rows=config.chunk_rows, n_threads=n_jobs(), on_chunk=progress.advance)
    seconds = time.perf_counter() - started
    report["seconds"] = seconds
    report["twins_per_second"] = report["n_twins"] / seconds if seconds > 0 else 0.0
    written = write_outputs(context, storage, mlflow, "twin_interventions", intervention_outputs(
        report, kept, rule.describe(), model_run_id=outcome_model.mlflow_run_id,
        params={"chunk_rows": config.chunk_rows, "twins_path": digital_twins.path}))
    report["mlflow_run_id"] = written.run_id
    context.log.info(f"ATE {report['ate']:.4f} [{report['ate_ci_low']:.4f}, "
                     f"{report['ate_ci_high']:.4f}], targeted uplift "
                     f"{report['uplift_targeted']:.4f} treating "
                     f"{100 * report['treated_share_targeted']:.1f}%")
    return dg.Output(report, metadata=written.metadata)


assets = [digital_twins, twin_interventions]
