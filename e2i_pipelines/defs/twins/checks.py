"""Fidelity of ``digital_twins`` as six asset checks (one step, each its own check).

Statistics and pass rules: :mod:`e2i_pipelines.analytics.twins.fidelity_checks`. The checks
read a seeded subsample of the real data (``dataset``, with its outcome) and the first twins
of the file (twin rows are exchangeable), so they take seconds whatever the twins' size.
"""


import dagster as dg
import numpy as np
import pandas as pd

from e2i_pipelines.analytics.twins.fidelity_checks import (
    CHECKS,
    CheckOutcome,
    Rules,
    fidelity_outputs,
    run_checks,
)
from e2i_pipelines.analytics.twins.twin_files import iter_parquet_chunks, sample_parquet_rows
from e2i_pipelines.core.budget import n_jobs
from e2i_pipelines.core.outputs import write_outputs
from e2i_pipelines.core.plots import png_metadata
from e2i_pipelines.core.progress import Progress
from e2i_pipelines.core.refs import DatasetRef, TwinsRef
from e2i_pipelines.core.storage import E2IStorage, open_file
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.defs.twins.assets import digital_twins
from e2i_pipelines.tiers import Tier, tier_kwargs

TWINS_KEY = digital_twins.key
DESCRIPTIONS = {
    "column_shapes": "Column shapes: every column's KSComplement (numeric) / TVComplement "
                     "(discrete) >= 0.95.",
    "column_pair_trends": "Column pair trends: every pair's correlation similarity (numeric) / "
                          "contingency similarity (others) >= 0.90.",
    "detection": "Detection: cross-validated AUC of a real-vs-twin classifier <= 0.60 "
                 "(warning up to 0.70, error above).",
    "ml_utility": "Train on twins, test on real: outcome-model R² >= 0.9 x train-on-real R².",
    "privacy": "Privacy: exact copies of real rows <= 0.1% and median distance to the closest "
               "real record >= 0.8 x that of real holdout rows.",
    "causal_fidelity": "Causal fidelity: the twins' simulated ATE and ATT inside the data "
                       "doubly robust estimate's 95% CI (widened by the twins' sampling error).",
}
CHECK_SPECS = [dg.AssetCheckSpec(name=n, asset=digital_twins, description=DESCRIPTIONS[n],
                                 additional_deps=["dataset"]) for n in CHECKS]


def load_rows(twins: TwinsRef, dataset: DatasetRef, rules: Rules) -> tuple[pd.DataFrame,
                                                                             pd.DataFrame]:
    """Seeded, shuffled real rows (modelled columns + outcome) and the first twins."""
    outcome = dataset.spec.outcome
    real = sample_parquet_rows(dataset.path, [*twins.columns, outcome], rules.sample_rows,
                               twins.seed)
    order = np.random.default_rng(np.random.SeedSequence([twins.seed, 3])).permutation(len(real))
    real = real.iloc[order].reset_index(drop=True)  # file order may be sorted: shuffle
    parts, have = [], 0
    for chunk in iter_parquet_chunks(twins.path, min(rules.sample_rows, 250_000), twins.columns):
        parts.append(chunk.iloc[: rules.sample_rows - have])
        have += len(parts[-1])
        if have >= rules.sample_rows:
            break
    return real, pd.concat(parts, ignore_index=True)


def _metadata(outcome: CheckOutcome, png: bytes | None, run_id: str | None) -> dict:
    meta = {"rule": outcome.rule}
    for key, value in outcome.numbers.items():
        if isinstance(value, (list, dict)):
            meta[key] = dg.MetadataValue.json(value)
        elif isinstance(value, float) and not np.isfinite(value):
            meta[key] = str(value)
        else:
            meta[key] = value.item() if isinstance(value, np.generic) else value
    if run_id:
        meta["mlflow_run_id"] = run_id
    if png is not None:
        meta["plot"] = png_metadata(png, outcome.name)
    return meta


def _severity(outcome: CheckOutcome) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if outcome.error else dg.AssetCheckSeverity.WARN


@dg.multi_asset_check(
    specs=CHECK_SPECS,
    name="twins_fidelity",
    description="Fidelity of the digital twins: shapes, pair trends, detection, ML utility, "
                "privacy and causal fidelity on a seeded subsample.",
    can_subset=True,
    ins={"digital_twins": dg.AssetIn(key=TWINS_KEY),
         "dataset": dg.AssetIn(key=dg.AssetKey("dataset"))},
    **tier_kwargs(Tier.HEAVY),
)
def twins_fidelity(
    context: dg.AssetCheckExecutionContext,
    digital_twins: TwinsRef,
    dataset: DatasetRef,
    storage: E2IStorage,
    mlflow: MlflowTracker,
):
    selected = [n for n in CHECKS
                if dg.AssetCheckKey(TWINS_KEY, n) in context.selected_asset_check_keys]
    rules = Rules()
    # safe: the digital_twins asset wrote this pickle under E2I_DATA_DIR; no caller names the path
    with open_file(digital_twins.model_path) as handle:
        model = pd.read_pickle(handle)
    try:
        real, twins = load_rows(digital_twins, dataset, rules)
    except ValueError as exc:  # e.g. the dataset file lost a modelled column
        raise dg.Failure(f"twins_fidelity cannot read the real rows or the twins: {exc}") from None
    context.log.info(f"fidelity checks {selected} on {len(real):,} real rows and "
                     f"{len(twins):,} twins")
    progress = Progress(context.log, len(selected), "fidelity checks", unit="checks",
                        every_seconds=0.0)
    outcomes = run_checks(
        real, twins, numeric=model.numeric, discrete=model.discrete_names,
        treatment=digital_twins.treatment, outcome=dataset.spec.outcome,
        real_chunks=iter_parquet_chunks(dataset.path, 500_000, digital_twins.columns),
        rules=rules, seed=digital_twins.seed, n_jobs=n_jobs(), only=selected,
        on_check=lambda _: progress.advance(1))
    written = write_outputs(context, storage, mlflow, "twins_fidelity",
                            fidelity_outputs(outcomes), name="twins_fidelity")
    for o in outcomes:
        context.log.info(f"check {o.name}: {'passed' if o.passed else 'FAILED'} ({o.rule})")
        yield dg.AssetCheckResult(check_name=o.name, asset_key=TWINS_KEY, passed=o.passed,
                                  severity=_severity(o),
                                  metadata=_metadata(o, written.pngs.get(f"{o.name}.png"),
                                                    written.run_id))


asset_checks = [twins_fidelity]
