"""Run config of the ``dataset`` asset: synthetic demo data or the user's own file + spec.

Paths (``path``, ``spec_path``, a ``graph`` file) must lie under the data root, or under
``<root>/<data_folder>/`` when ``data_folder`` is set (the API sets it to the key's client).
"""

from pathlib import Path
from typing import ClassVar, Literal

import dagster as dg
from pydantic import Field

from e2i_pipelines.core.data_root import DataScope, resolve_user_path
from e2i_pipelines.core.spec import (
    MIN_ROWS_AFTER_DROP,
    CausalSpec,
    DataValidationError,
    load_spec_yaml,
    spec_from_mapping,
)
from e2i_pipelines.data import synthetic


class DatasetConfig(dg.Config):
    """Where the data comes from. ``source: file`` needs ``path`` and a spec (file or inline)."""

    source: Literal["synthetic", "file"] = Field(
        default="synthetic", description="'synthetic' demo data or the user's own 'file'."
    )
    n_rows: int = Field(default=100_000, description="Rows of synthetic data (1k..50M).")
    seed: int = Field(default=7, description="Seed of the synthetic generator.")
    path: str = Field(default="", description="CSV or Parquet file (source=file).")
    spec_path: str = Field(default="", description="YAML spec file with the column roles.")
    treatment: str = Field(default="", description="Binary 0/1 treatment column (inline spec).")
    outcome: str = Field(default="", description="Numeric outcome column (inline spec).")
    common_causes: list[str] = Field(
        default=[], description="Confounders (inline spec); empty = a randomised experiment.")
    effect_modifiers: list[str] = Field(default=[], description="Effect modifiers (inline spec).")
    id_column: str = Field(default="", description="Unique row id column; empty: one is added.")
    categorical: list[str] = Field(
        default=[], description="Columns coded as categories whatever their dtype (inline spec).")
    missing: Literal["error", "drop"] = Field(
        default="error", description="NaN in the spec's columns: 'error', or 'drop' the rows "
        f"(fails when fewer than {MIN_ROWS_AFTER_DROP} remain).")
    target: Literal["ate", "att", "atc"] = Field(
        default="ate", description="Estimand: average effect on all, the treated, the controls.")
    graph: str = Field(
        default="", description="Causal DAG, DOT or GML text or a file path (inline spec); the "
        "adjustment set is then identified from it.")

    data_folder: str = Field(
        default="", description="Client folder under the data root that paths must lie in; "
        "set by the API from the key's client (refused in API requests). Empty: the whole root.")

    SERVER_SET: ClassVar[frozenset[str]] = frozenset({"data_folder"})
    """Fields the API sets from the caller; a request naming them is refused."""

    def with_scope(self, scope: DataScope) -> "DatasetConfig":
        """This config confined to the caller's data folder (see ``core.data_root``); only
        ``source: file`` reads files, so synthetic configs are returned unchanged."""
        if self.source != "file":
            return self
        return self.model_copy(update={"data_folder": scope.folder})

    def check(self) -> None:
        """Raise dg.Failure when the source, a path or the spec is unusable (reads only the
        spec and graph files, never the data)."""
        try:
            if self.source == "file":
                self.data_path()
            self.resolve_spec().check_roles()
        except DataValidationError as exc:
            raise dg.Failure(description=f"dataset config/data invalid: {exc}") from exc

    def data_path(self) -> Path:
        """The resolved data file, which must lie under the data folder."""
        if not self.path:
            raise DataValidationError("source 'file' needs 'path' (a CSV or Parquet file)")
        return resolve_user_path(self.path, "dataset.path", self.data_folder)

    def resolve_spec(self) -> CausalSpec:
        """The spec this config describes; raises DataValidationError naming the problem."""
        if self.source == "synthetic":
            if not synthetic.MIN_ROWS <= self.n_rows <= synthetic.MAX_ROWS:
                raise DataValidationError(
                    f"n_rows must be between {synthetic.MIN_ROWS:,} and {synthetic.MAX_ROWS:,}, "
                    f"got {self.n_rows:,}"
                )
            return synthetic.SPEC
        if not self.path:
            raise DataValidationError("source 'file' needs 'path' (a CSV or Parquet file)")
        inline = bool(self.treatment or self.outcome or self.common_causes or self.graph
                      or self.categorical or self.effect_modifiers)
        if self.spec_path and inline:
            raise DataValidationError("give the spec either as 'spec_path' or inline, not both")
        if self.spec_path:
            return load_spec_yaml(self.spec_path, key="dataset.spec_path", folder=self.data_folder)
        if not (self.treatment and self.outcome):
            raise DataValidationError(
                "source 'file' needs a spec: 'spec_path' or inline 'treatment', 'outcome' "
                "(and 'common_causes', 'graph', ...)"
            )
        return spec_from_mapping({
            "treatment": self.treatment, "outcome": self.outcome,
            "common_causes": list(self.common_causes),
            "effect_modifiers": list(self.effect_modifiers), "id_column": self.id_column or None,
            "categorical": list(self.categorical), "missing": self.missing,
            "target": self.target, "graph": self.graph or None,
        }, source="inline spec", folder=self.data_folder, graph_key="dataset.graph")
