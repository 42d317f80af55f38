"""Run config of the ``dataset`` asset: synthetic demo data, an uploaded dataset (``id`` and
optional ``version``, see ``core.datasets``) or a server file (admins only) + spec.

``data_folder`` is set by the API from a non-admin key's client: the dataset id must be that
client's, a server ``path`` is refused, and spec/graph files must lie under
``<root>/<data_folder>/``. Empty (admin keys, the Dagster UI): any dataset, the whole root.
"""

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import dagster as dg
from pydantic import Field
from upath import UPath

from e2i_pipelines.core import datasets as store
from e2i_pipelines.core.data_root import DataScope, resolve_user_path
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.spec import (
    MIN_ROWS_AFTER_DROP,
    CausalSpec,
    load_spec_yaml,
    spec_from_mapping,
)
from e2i_pipelines.data import synthetic


class DatasetConfig(dg.Config):
    """Where the data comes from. ``source: file`` needs ``path`` and a spec (file or inline)."""

    source: Literal["synthetic", "dataset", "file"] = Field(
        default="synthetic", description="'synthetic' demo data, an uploaded 'dataset' (give "
        "'id'; implied by 'id') or a server 'file' (admin keys only)."
    )
    id: str = Field(default="", description="Dataset id from POST /v1/datasets (ds_...).")
    version: str = Field(default="", description="Dataset version (sha256); empty: the latest.")
    n_rows: int = Field(default=100_000, description="Rows of synthetic data (1k..50M).")
    seed: int = Field(default=7, description="Seed of the synthetic generator.")
    path: str = Field(default="", description="CSV or Parquet file on the server (source=file, "
                      "admin keys only).")
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
    design: str = Field(default="cross_section", description="Inline spec: 'cross_section' or "
                        "'panel' (long data, one row per unit x period; the keys below).")
    unit: str = Field(default="", description="Panel: unit column (inline spec).")
    time: str = Field(default="", description="Panel: period column, numbers or dates.")
    treatment_off: str = Field(default="error", description="Panel: a treatment switching off "
                               "is an 'error' or 'allowed'.")
    weights: str = Field(default="", description="Panel: weights column (optional).")
    cluster: str = Field(default="", description="Panel: cluster column; empty: the unit.")
    control_group: str = Field(default="never_treated", description="Panel: 'never_treated' "
                               "or 'not_yet_treated'.")
    anticipation: int = Field(default=0, description="Panel: periods of effect before launch.")
    treatment_type: str = Field(default="binary", description="Panel: 'binary' or "
                                "'continuous' (a dose).")
    covariates: list[str] = Field(default=[], description="Panel: covariates (same as "
                                  "common_causes; give one of the two).")

    data_folder: str = Field(
        default="", description="Client folder under the data root that paths must lie in; "
        "set by the API from the key's client (refused in API requests). Empty: the whole root.")

    PANEL_KEYS: ClassVar[tuple[str, ...]] = (
        "design", "unit", "time", "treatment_off", "weights", "cluster", "control_group",
        "anticipation", "treatment_type", "covariates")
    """Inline spec keys of ``design: panel`` (checked by ``core.spec``, as in a spec file)."""

    SERVER_SET: ClassVar[frozenset[str]] = frozenset({"data_folder"})
    """Fields the API sets from the caller; a request naming them is refused."""

    @property
    def kind(self) -> str:
        """``synthetic``, ``dataset`` (an id is given) or ``file``."""
        return "dataset" if self.id or self.source == "dataset" else self.source

    def with_scope(self, scope: DataScope) -> "DatasetConfig":
        """This config confined to the caller (see ``core.data_root``): a non-admin key's run
        reads only its client's datasets and spec files and names no server path."""
        if self.kind == "synthetic":
            return self
        if self.kind == "file" and scope.folder:
            raise ValueError(f"dataset.path {self.ADMIN_ONLY}")
        return self.model_copy(update={"data_folder": scope.folder})

    ADMIN_ONLY: ClassVar[str] = ("(a file on the server) is accepted only from admin keys: upload "
                                 "the file with POST /v1/datasets and give dataset.id")

    def check(self) -> None:
        """Raise dg.Failure when the source, a path or the spec is unusable (reads only the
        spec and graph files, never the data)."""
        try:
            self.resolve_spec().check_roles()
            if self.kind == "file":
                self.data_path()
            elif self.kind == "dataset":
                self.dataset_object()
        except DataValidationError as exc:
            raise dg.Failure(description=f"dataset config/data invalid: {exc}") from exc

    def data_path(self) -> Path:
        """The resolved data file, which must lie under the data root (admin/UI runs only)."""
        if not self.path:
            raise DataValidationError("source 'file' needs 'path' (a CSV or Parquet file)")
        if self.data_folder:
            raise DataValidationError(f"dataset.path {self.ADMIN_ONLY}")
        return resolve_user_path(self.path, "dataset.path", self.data_folder)

    def dataset_object(self) -> tuple[dict[str, Any], UPath]:
        """The manifest and stored Parquet of ``id``/``version`` (the client's own when
        ``data_folder`` is set); DataValidationError naming the key otherwise."""
        if self.source not in ("synthetic", "dataset"):
            raise DataValidationError("give either dataset.id (an uploaded dataset) or "
                                      "dataset.path (source 'file'), not both")
        if not self.id:
            raise DataValidationError("source 'dataset' needs 'id' (from POST /v1/datasets)")
        if self.version and not re.match(store.VERSION_PATTERN, self.version):
            raise DataValidationError("dataset.version must be 64 hex digits (a version of "
                                      "GET /v1/datasets/{id}) or empty for the latest")
        try:
            return store.resolve(self.id, self.version or None, self.data_folder or None)
        except store.DatasetNotFound as exc:
            raise DataValidationError(f"dataset.id: {exc}") from None

    def resolve_spec(self) -> CausalSpec:
        """The spec this config describes; raises DataValidationError naming the problem."""
        if self.kind == "synthetic":
            if not synthetic.MIN_ROWS <= self.n_rows <= synthetic.MAX_ROWS:
                raise DataValidationError(
                    f"n_rows must be between {synthetic.MIN_ROWS:,} and {synthetic.MAX_ROWS:,}, "
                    f"got {self.n_rows:,}"
                )
            return synthetic.SPEC
        if self.kind == "file" and not self.path:
            raise DataValidationError("source 'file' needs 'path' (a CSV or Parquet file)")
        panel = self.panel_keys()
        inline = bool(self.treatment or self.outcome or self.common_causes or self.graph
                      or self.categorical or self.effect_modifiers or panel)
        if self.spec_path and inline:
            raise DataValidationError("give the spec either as 'spec_path' or inline, not both")
        if self.spec_path:
            return load_spec_yaml(self.spec_path, key="dataset.spec_path", folder=self.data_folder)
        if not (self.treatment and self.outcome):
            raise DataValidationError(
                f"source '{self.kind}' needs a spec: 'spec_path' or inline 'treatment', 'outcome' "
                "(and 'common_causes', 'graph', ...)"
            )
        causes = ({"common_causes": list(self.common_causes)}
                  if self.common_causes or "covariates" not in panel else {})
        return spec_from_mapping({
            "treatment": self.treatment, "outcome": self.outcome, **causes, **panel,
            "effect_modifiers": list(self.effect_modifiers), "id_column": self.id_column or None,
            "categorical": list(self.categorical), "missing": self.missing,
            "target": self.target, "graph": self.graph or None,
        }, source="inline spec", folder=self.data_folder, graph_key="dataset.graph")

    def panel_keys(self) -> dict[str, Any]:
        """The inline panel spec keys set to something other than their default."""
        fields = type(self).model_fields
        return {k: getattr(self, k) for k in self.PANEL_KEYS
                if getattr(self, k) != fields[k].default}
