"""The ``causal_estimate`` asset's panel branch: read the dataset's panel columns, estimate,
and the :class:`EstimateResult` the refs carry (``design: panel``, settings in ``details``,
so the panel checks rebuild the same estimate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import pandas as pd

from e2i_pipelines.analytics.causal.estimate import EstimateResult
from e2i_pipelines.analytics.causal.estimate_run import EstimateRunError
from e2i_pipelines.analytics.panel.data import PanelData, load_panel
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.run import resolve_panel_method, run_panel
from e2i_pipelines.analytics.panel.settings import PanelSettings
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.refs import DatasetRef

PANEL_DESIGN = "panel"
CROSS_SECTION_SKIP = ("skipped: applies to design: panel (this spec is a cross-section)")
PANEL_SKIP = ("skipped: a cross-section check; design: panel is checked by pre_trends and "
              "placebo_in_time")


def read_panel(dataset: DatasetRef) -> PanelData:
    """The dataset's panel (every row: a row sample would break the panel), checked by the
    dataset step that wrote it (only the cheap assertions run again)."""
    try:
        return load_panel(_read(dataset), dataset.spec, source="dataset", checked=True)
    except DataValidationError as exc:
        raise EstimateRunError("input invalid", str(exc)) from exc


def _read(dataset: DatasetRef) -> pd.DataFrame:
    return dataset.read(columns=dataset.spec.required_columns)


def run_panel_estimate(dataset: DatasetRef, method: str, settings: PanelSettings,
                       log: Callable[[str], None]) -> tuple[PanelData, PanelResult]:
    """Check the method against the spec, read the panel the dataset step checked, then
    estimate (EstimateRunError: "config invalid", "input invalid" or "failed")."""
    try:
        method = resolve_panel_method(method, dataset.spec.treatment_type)
    except DataValidationError as exc:
        raise EstimateRunError("config invalid", str(exc)) from exc
    try:
        panel, result = run_panel(_read(dataset), dataset.spec, method, settings,
                                  source="dataset", checked=True)  # by the dataset step
    except DataValidationError as exc:
        raise EstimateRunError("input invalid", str(exc)) from exc
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise EstimateRunError("failed", str(exc)) from exc
    truth = (dataset.truth or {}).get("att")
    result.true_value = float(truth) if truth is not None else None
    log(f"panel: {panel.n_units:,} units x {panel.n_periods} periods, "
        f"{len(panel.cohorts)} cohort(s), {panel.n_clusters:,} clusters; method {method}")
    for warning in result.warnings:
        log(f"warning: {warning}")
    log(f"{method}: {result.estimate:.4f} [{result.ci[0]:.4f}, {result.ci[1]:.4f}]")
    return panel, result


def estimate_result(result: PanelResult, panel: PanelData,
                    settings: PanelSettings) -> EstimateResult:
    """The ref's EstimateResult of a panel estimate."""
    return EstimateResult(
        method=result.method, estimate=result.estimate, ci_low=result.ci[0],
        ci_high=result.ci[1], confidence_level=result.confidence_level, n_rows=len(panel.y),
        adjustment_set=list(panel.covariate_names), effect_modifiers=[],
        std_error=result.se, target="att", design=PANEL_DESIGN, requested_method=result.method,
        details={"panel_settings": asdict(settings), "n_units": panel.n_units,
                 "n_periods": panel.n_periods, "warnings": list(result.warnings)})


def panel_settings(details: dict) -> PanelSettings:
    """The PanelSettings stored by :func:`estimate_result`."""
    return PanelSettings(**details["panel_settings"])
