"""The ``dataset`` step's panel input: checked against the run's panel method before anything
is written, or cut to its last pre-period cross-section for runs without a causal estimate
(twins, SHAP, feature refresh), which read one row per unit."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd

from e2i_pipelines.analytics.panel.data import last_pre_period
from e2i_pipelines.analytics.panel.run import check_panel_input
from e2i_pipelines.core.spec import CausalSpec, validate_frame
from e2i_pipelines.defs.causal.config import planned_estimate


def prepare_panel(context: dg.AssetExecutionContext, frame: pd.DataFrame, spec: CausalSpec
                  ) -> tuple[pd.DataFrame, CausalSpec, dict[str, Any]]:
    """(frame, spec, metadata) the step writes. Raises DataValidationError naming the key, or
    dg.Failure for an invalid causal_estimate config, before any write."""
    planned = planned_estimate(context.job_def, context.run.run_config)
    if planned is None:
        cross = last_pre_period(frame, spec, source="dataset")
        validate_frame(cross.frame, cross.spec, source="dataset (last pre-period)")
        context.log.info(cross.describe())
        return cross.frame, cross.spec, {"panel_cross_section": cross.describe()}
    planned.check()
    method, panel = check_panel_input(frame, spec, planned.method, planned.panel_settings(),
                                      source="dataset")
    context.log.info(f"panel checked for {method}: {panel.n_units:,} units x "
                     f"{panel.n_periods} periods, {len(panel.cohorts)} cohort(s)")
    return frame, spec, {"design": "panel", "panel_units": panel.n_units,
                         "panel_periods": panel.n_periods,
                         "panel_warnings": dg.MetadataValue.json(panel.warnings)}
