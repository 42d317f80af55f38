"""The ``dataset`` step's panel input, checked before anything is written: against the run's
panel method when the run estimates (``causal_estimate``), and cut to its last pre-period
cross-section for the steps that read one row per unit (twins, SHAP, feature refresh). A run
with both (``e2i_main_job``) writes the cross-section as its dataset and the whole panel
beside it (:class:`FullPanel`, ``DatasetRef.panel``), which only ``causal_estimate`` reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from e2i_pipelines.analytics.panel.data import last_pre_period
from e2i_pipelines.analytics.panel.run import check_panel_input
from e2i_pipelines.core.refs import DatasetRef
from e2i_pipelines.core.spec import CausalSpec, validate_frame
from e2i_pipelines.defs.causal.config import CAUSAL_OP, planned_estimate

DATASET_OP = "dataset"
PANEL_FILE = "panel.parquet"


@dataclass(frozen=True)
class FullPanel:
    """The whole panel written beside a cross-section dataset (``panel.parquet``)."""

    frame: pd.DataFrame
    spec: CausalSpec

    def write(self, folder: Path) -> None:
        self.frame.to_parquet(folder / PANEL_FILE, index=False)

    def ref(self, final: Any) -> DatasetRef:
        """The panel's ref in the dataset's ``final`` folder (its rows keyed by the unit)."""
        return DatasetRef(path=str(final / PANEL_FILE), spec=self.spec, n_rows=len(self.frame),
                          id_column=self.spec.id_column or self.spec.unit)


def cross_section_readers(job_def: dg.JobDefinition) -> list[str]:
    """The run's steps that read the dataset and are not the causal estimate."""
    if not job_def.graph.has_node_named(DATASET_OP):
        return []
    downstream = job_def.graph.dependency_structure.output_to_downstream_inputs_for_node(
        DATASET_OP)
    return sorted({h.node_name for handles in downstream.values() for h in handles}
                  - {CAUSAL_OP})


def prepare_panel(context: dg.AssetExecutionContext, frame: pd.DataFrame, spec: CausalSpec
                  ) -> tuple[pd.DataFrame, CausalSpec, dict[str, Any], FullPanel | None]:
    """(frame, spec, metadata, full panel or None) the step writes. Raises
    DataValidationError naming the key, or dg.Failure for an invalid causal_estimate config,
    before any write."""
    planned = planned_estimate(context.job_def, context.run.run_config)
    metadata: dict[str, Any] = {}
    panel = None
    if planned is not None:
        planned.check()
        method, panel = check_panel_input(frame, spec, planned.method,
                                          planned.panel_settings(), source="dataset")
        context.log.info(f"panel checked for {method}: {panel.n_units:,} units x "
                         f"{panel.n_periods} periods, {len(panel.cohorts)} cohort(s)")
        metadata = {"design": "panel", "panel_units": panel.n_units,
                    "panel_periods": panel.n_periods,
                    "panel_warnings": dg.MetadataValue.json(panel.warnings)}
    readers = cross_section_readers(context.job_def)
    if planned is not None and not readers:  # causal_job: the panel only
        return frame, spec, metadata, None
    cross = last_pre_period(frame, spec, source="dataset", panel=panel)
    validate_frame(cross.frame, cross.spec, source="dataset (last pre-period)")
    full = FullPanel(frame, spec) if planned is not None else None
    note = cross.describe() + (f" for {', '.join(readers)}; causal_estimate reads the whole "
                               f"panel ({PANEL_FILE})" if full is not None else "")
    context.log.info(note)
    return cross.frame, cross.spec, {**metadata, "panel_cross_section": note}, full
