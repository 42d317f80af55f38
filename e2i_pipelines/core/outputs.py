"""The one writer of an asset's outputs: files, MLflow run and Dagster metadata.

An analysis returns an :class:`Outputs` spec (plain values); :func:`asset_outputs` writes its
files into the staging folder of :class:`~e2i_pipelines.core.storage.E2IStorage` (renamed into
place only when everything succeeded, so a failed run leaves nothing half-written), logs the
MLflow params, metrics and files from there, and turns the metadata into Dagster values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from e2i_pipelines.core.plots import figure_png, png_metadata
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker


@dataclass(frozen=True)
class Plot:
    """A matplotlib figure written as PNG; shown inline in the metadata under ``key``."""

    figure: Any
    title: str
    key: str | None = None
    dpi: int = 110


@dataclass(frozen=True)
class FilePath:
    """Metadata value: the final path of the written file ``name``."""

    name: str


FileContent = bytes | str | Plot | Callable[[Path], Any]
"""Bytes, text, a figure, or a callback that writes the file at the path it is given."""


@dataclass
class Outputs:
    """What an analysis writes: files by name, metadata and MLflow params/metrics/tags."""

    files: dict[str, FileContent] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: Sequence[str] | None = None  # files logged to MLflow; None: the whole folder


@dataclass
class Staging:
    """The folder being written (``folder``) and, once done, what was written."""

    folder: Path
    final: Path
    outputs: Outputs = field(default_factory=Outputs)
    pngs: dict[str, bytes] = field(default_factory=dict)
    run_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def write(self, outputs: Outputs) -> None:
        """Write ``outputs.files`` into the staging folder (once per asset)."""
        self.outputs = outputs
        for name, content in outputs.files.items():
            path = self.folder / name
            if isinstance(content, Plot):
                self.pngs[name] = figure_png(content.figure, path, dpi=content.dpi)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            elif isinstance(content, str):
                path.write_text(content)
            else:
                content(path)

    def path(self, name: str) -> str:
        """Final path of the output file ``name``."""
        return str(self.final / name)


@contextmanager
def asset_outputs(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                  storage: E2IStorage, mlflow: MlflowTracker | None, run_name: str,
                  name: str | None = None) -> Iterator[Staging]:
    """Stage this asset's output folder; heavy writers may stream into ``staging.folder``
    before calling ``staging.write``. On success: MLflow run (when ``mlflow``), rename into
    place, and ``staging.metadata``/``run_id`` are set; on error nothing is left."""
    final = storage.output_dir(context, name)
    with storage.atomic_output(final) as tmp:
        staging = Staging(folder=tmp, final=final)
        yield staging
        if mlflow is not None:
            staging.run_id = _log_mlflow(context, mlflow, run_name, staging)
    staging.metadata = dagster_metadata(staging.outputs.metadata, staging)


def write_outputs(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                  storage: E2IStorage, mlflow: MlflowTracker | None, run_name: str,
                  outputs: Outputs, name: str | None = None) -> Staging:
    """:func:`asset_outputs` for outputs computed beforehand."""
    with asset_outputs(context, storage, mlflow, run_name, name) as staging:
        staging.write(outputs)
    return staging


def _log_mlflow(context: Any, mlflow: MlflowTracker, run_name: str, staging: Staging) -> str:
    import mlflow as mlf

    out = staging.outputs
    with mlflow.start_run(context, run_name, tags=out.tags or None) as run:
        if out.params:
            mlf.log_params(out.params)
        if out.metrics:
            mlf.log_metrics(out.metrics)
        if out.artifacts is None:
            mlf.log_artifacts(str(staging.folder))
        else:
            for name in out.artifacts:
                mlf.log_artifact(str(staging.folder / name))
        return run.info.run_id


def dagster_metadata(metadata: dict[str, Any], staging: Staging | None = None) -> dict[str, Any]:
    """Plain metadata as Dagster values: lists/dicts as JSON, tables as markdown, numpy scalars
    as Python values, :class:`FilePath` as a path; plus inline plots and ``mlflow_run_id``."""
    out = {key: metadata_value(value, staging) for key, value in metadata.items()}
    if staging is not None:
        for name, content in staging.outputs.files.items():
            if isinstance(content, Plot) and content.key:
                out[content.key] = png_metadata(staging.pngs[name], content.title)
        if staging.run_id is not None:
            out["mlflow_run_id"] = staging.run_id
    return out


def metadata_value(value: Any, staging: Staging | None = None) -> Any:
    """One metadata value as Dagster shows it."""
    if isinstance(value, FilePath):
        if staging is None:
            raise ValueError(f"FilePath({value.name!r}) needs the written folder")
        return dg.MetadataValue.path(staging.path(value.name))
    if isinstance(value, pd.DataFrame):
        return dg.MetadataValue.md(value.to_markdown(index=False))
    if isinstance(value, (list, dict)):
        return dg.MetadataValue.json(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
