"""The ``dataset`` asset: validated data on disk, the root every analysis starts from (synthetic,
an uploaded dataset by id, or an admin's server file)."""

import json
from dataclasses import asdict, replace

import dagster as dg
import numpy as np

from e2i_pipelines.core.datasets import load_frame
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.refs import DatasetRef
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.data.synthetic import generate_e2i
from e2i_pipelines.data.user_files import load_user_frame
from e2i_pipelines.defs.data.config import DatasetConfig
from e2i_pipelines.defs.data.panel_input import prepare_panel
from e2i_pipelines.tiers import Tier, asset_tier_kwargs

SYNTHETIC_ID = "e2i_id"


@dg.asset(
    group_name="data",
    description="Synthetic E2I data (true ATE known), an uploaded dataset or a CSV/Parquet file, "
                "validated.",
    **asset_tier_kwargs(Tier.MEDIUM),
)
def dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, storage: E2IStorage
) -> dg.Output[DatasetRef]:
    try:
        spec = config.resolve_spec()
        manifest = None
        if config.kind == "synthetic":
            context.log.info(f"generating {config.n_rows:,} synthetic HCP rows (seed {config.seed})")
            frame, truth = generate_e2i(config.n_rows, config.seed)
            dropped = None
        elif config.kind == "dataset":
            manifest, data = config.dataset_object()
            context.log.info(f"loading dataset {manifest['id']} version {manifest['version'][:12]}")
            (frame, dropped), truth = load_frame(manifest, data, spec), None
        else:
            context.log.info(f"loading and validating {config.path}")
            (frame, dropped), truth = load_user_frame(config.data_path(), spec, config.path), None
        if dropped is not None and dropped.rows_dropped:
            context.log.warning(
                f"missing: drop removed {dropped.rows_dropped:,} of {dropped.rows_before:,} "
                f"rows; NaN rows per column: {dropped.nan_rows_per_column}")
        panel_metadata, full_panel = {}, None
        if spec.panel:  # checked (and cut for cross-section steps) before anything is written
            frame, spec, panel_metadata, full_panel = prepare_panel(context, frame, spec)
    except DataValidationError as exc:
        raise dg.Failure(description=f"dataset config/data invalid: {exc}") from exc

    if spec.id_column is None:
        frame.insert(0, SYNTHETIC_ID, np.arange(1, len(frame) + 1, dtype=np.int64))
        spec = replace(spec, id_column=SYNTHETIC_ID)

    final = storage.output_dir(context)
    with storage.atomic_output(final) as tmp:
        frame.to_parquet(tmp / "data.parquet", index=False)
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
        if truth is not None:
            (tmp / "truth.json").write_text(json.dumps(truth, indent=2))
        if full_panel is not None:
            full_panel.write(tmp)
    ref = DatasetRef(
        path=str(final / "data.parquet"), spec=spec, n_rows=len(frame),
        id_column=spec.id_column, truth=truth,
        panel=full_panel.ref(final) if full_panel is not None else None,
    )
    treated = float(frame[spec.treatment].mean())
    metadata = {
        "source": config.kind,
        "path": dg.MetadataValue.path(ref.path),
        "rows": len(frame),
        "treatment": spec.treatment,
        "outcome": spec.outcome,
        "common_causes": dg.MetadataValue.json(spec.common_causes),
        "effect_modifiers": dg.MetadataValue.json(spec.effect_modifiers),
        "categorical": dg.MetadataValue.json(spec.categorical),
        "adjustment_set": dg.MetadataValue.json(spec.adjustment_set),
        "design": "randomised (no confounders)" if spec.randomised else "observational",
        "target": spec.target,
        "treated_share": treated,
        "preview": dg.MetadataValue.md(frame.head(5).to_markdown(index=False)),
    }
    metadata.update(panel_metadata)
    if manifest is not None:
        metadata["dataset_id"] = manifest["id"]
        metadata["dataset_version"] = manifest["version"]
        metadata["dataset_name"] = manifest["name"]
        metadata["schema"] = dg.MetadataValue.table_schema(dg.TableSchema(columns=[
            dg.TableColumn(c["name"], c["type"], description=f"{c['missing']:,} missing")
            for c in manifest["columns"]]))
    if spec.graph:
        metadata["graph"] = dg.MetadataValue.md(f"```\n{spec.graph.strip()}\n```")
    if dropped is not None:
        metadata["missing"] = spec.missing
        metadata["rows_before_drop"] = dropped.rows_before
        metadata["rows_dropped"] = dropped.rows_dropped
        metadata["nan_rows_per_column"] = dg.MetadataValue.json(dropped.nan_rows_per_column)
    if truth is not None:
        metadata["true_ate"] = truth["ate"]
        metadata["naive_difference"] = truth["naive_difference"]
    return dg.Output(ref, metadata=metadata)


assets = [dataset]
