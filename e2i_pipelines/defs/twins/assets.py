"""Assets ``digital_twins`` (sampled population + fidelity) and ``twin_interventions``."""

import json
import pickle
import time
from contextlib import nullcontext
from pathlib import Path

import dagster as dg
import pandas as pd

from e2i_pipelines.analytics.twins.copula import (
    CopulaModel,
    TwinsRef,
    fit_copula,
    iter_parquet_chunks,
    sample_parquet_rows,
    write_twins,
)
from e2i_pipelines.analytics.twins.fidelity import FidelityAccumulator, fidelity_figure
from e2i_pipelines.analytics.twins.interventions import (
    TargetingError,
    policy_figure,
    simulate_policies,
    validate_rule,
)
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.fanout import fanout_metadata, open_fanout
from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.plots import figure_png, png_metadata
from e2i_pipelines.core.progress import Progress
from e2i_pipelines.core.refs import DatasetRef, ModelRef
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.twins.config import DigitalTwinsConfig, TwinInterventionsConfig
from e2i_pipelines.tiers import Tier, asset_tier_kwargs


def _fit_population(context: dg.AssetExecutionContext, config: DigitalTwinsConfig,
                    dataset: DatasetRef) -> tuple[CopulaModel, pd.DataFrame]:
    spec = dataset.spec
    columns = [*spec.covariates, spec.treatment]
    try:
        real = sample_parquet_rows(dataset.path, columns, config.fit_rows, config.seed)
        model = fit_copula(real, columns, priority=[spec.treatment], categorical=spec.categorical,
                           max_fit_rows=config.fit_rows,
                           grid_size=config.grid_size, min_stratum_rows=config.min_stratum_rows,
                           seed=config.seed)
    except ValueError as exc:
        raise dg.Failure(f"digital_twins cannot model dataset {dataset.path}: {exc}") from None
    context.log.info(
        f"population model: {len(model.numeric)} numeric columns, discrete {model.discrete_names}, "
        f"{model.n_strata} strata ({100 * model.pooled_share:.1f}% of rows in small strata), "
        f"fitted on {model.n_fit_rows:,} rows")
    return model, real


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
    import mlflow as mlf

    config.check()
    fanout = open_fanout(context, config.fan_out)
    model, real = _fit_population(context, config, dataset)
    final = storage.output_dir(context)
    started = time.perf_counter()
    with storage.atomic_output(final) as tmp, fanout or nullcontext():
        (tmp / "population_model.pkl").write_bytes(pickle.dumps(model))
        fidelity = FidelityAccumulator(real, model.numeric, model.discrete_names,
                                       ks_rows=config.ks_rows)
        progress = Progress(context.log, config.n_twins, "digital twins", every_seconds=0.0)

        def on_chunk(chunk) -> None:
            fidelity.update(chunk)
            progress.advance(len(chunk))

        written = write_twins(model, config.n_twins, tmp / "twins.parquet",
                              chunk_rows=config.chunk_rows, seed=config.seed, on_chunk=on_chunk,
                              workers=n_jobs(), mapper=fanout)
        seconds = time.perf_counter() - started
        report = fidelity.report()
        (tmp / "fidelity.json").write_text(json.dumps(report, default=json_default, indent=1))
        png = figure_png(fidelity_figure(report), tmp / "fidelity.png")
    rate = written / seconds if seconds > 0 else 0.0
    summary = {"max_ks": report["max_ks"], "max_abs_corr_diff": report["max_abs_corr_diff"],
               "max_frequency_diff": report["max_frequency_diff"]}
    with mlflow.start_run(context, "digital_twins") as run:
        mlf.log_params({"n_twins": config.n_twins, "chunk_rows": config.chunk_rows,
                        "seed": config.seed, "fit_rows": model.n_fit_rows,
                        "grid_size": config.grid_size, "n_strata": model.n_strata})
        mlf.log_metrics({**summary, "twins_per_second": rate})
        for name in ("fidelity.png", "fidelity.json"):
            mlf.log_artifact(str(final / name))
        run_id = run.info.run_id
    ref = TwinsRef(path=str(final / "twins.parquet"), n_rows=written, columns=model.columns,
                   treatment=dataset.spec.treatment, model_path=str(final / "population_model.pkl"),
                   seed=config.seed, fidelity=summary, source_dataset=dataset.path)
    return dg.Output(ref, metadata={
        "n_twins": written,
        **summary,
        "max_corr_diff_pair": ", ".join(report["max_corr_diff_pair"]),
        "ks": dg.MetadataValue.json({k: round(v, 5) for k, v in report["ks"].items()}),
        "frequency_diff": dg.MetadataValue.json(report["frequency_diff"]),
        "n_strata": model.n_strata,
        "pooled_share": model.pooled_share,
        "fit_rows": model.n_fit_rows,
        "twins_per_second": rate,
        "seconds": seconds,
        "path": dg.MetadataValue.path(ref.path),
        "mlflow_run_id": run_id,
        "fidelity_plot": png_metadata(png, "twin fidelity"),
        **fanout_metadata(context, fanout),
    })


def _check_inputs(twins: TwinsRef, model: ModelRef) -> None:
    missing = [c for c in model.feature_names if c not in twins.columns]
    if missing:
        raise dg.Failure(f"outcome model features {missing} are not twin columns {twins.columns}")
    if model.treatment != twins.treatment:
        raise dg.Failure(f"outcome model treatment {model.treatment!r} differs from the twins' "
                         f"treatment {twins.treatment!r}")
    if not Path(twins.path).is_file():
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
    import mlflow as mlf

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
    final = storage.output_dir(context)
    with storage.atomic_output(final) as tmp:
        (tmp / "interventions.json").write_text(json.dumps(report, default=json_default, indent=1))
        png = figure_png(policy_figure(report, kept, rule.describe()), tmp / "interventions.png")
    numbers = {k: v for k, v in report.items() if isinstance(v, int | float) and v is not None}
    with mlflow.start_run(context, "twin_interventions",
                          tags={"outcome_model_run": outcome_model.mlflow_run_id or ""}) as run:
        mlf.log_params({"targeting_rule": rule.describe(), "chunk_rows": config.chunk_rows,
                        "twins_path": digital_twins.path})
        mlf.log_metrics({k: float(v) for k, v in numbers.items()})
        for name in ("interventions.png", "interventions.json"):
            mlf.log_artifact(str(final / name))
        run_id = run.info.run_id
    report["mlflow_run_id"] = run_id
    context.log.info(f"ATE {report['ate']:.4f} [{report['ate_ci_low']:.4f}, "
                     f"{report['ate_ci_high']:.4f}], targeted uplift "
                     f"{report['uplift_targeted']:.4f} treating "
                     f"{100 * report['treated_share_targeted']:.1f}%")
    return dg.Output(report, metadata={
        **numbers,
        "targeting_rule": rule.describe(),
        "uplift_method": report["uplift_method"],
        "interval": "95% Monte-Carlo CI over twins (given the fitted models)",
        "mlflow_run_id": run_id,
        "plot": png_metadata(png, "simulated policies"),
    })


assets = [digital_twins, twin_interventions]
