"""The panel estimators by name and :func:`run_panel`, which runs one on a validated panel.

Each entry of :data:`METHODS` takes the :class:`~.data.PanelData` and
:class:`~.settings.PanelSettings` and returns a :class:`~.result.PanelResult`.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from e2i_pipelines.analytics.panel.callaway_santanna import callaway_santanna
from e2i_pipelines.analytics.panel.data import PanelData, load_panel
from e2i_pipelines.analytics.panel.dose import dose_design, dose_response_panel
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.sdid import synthetic_did_panel
from e2i_pipelines.analytics.panel.settings import CONTINUOUS_METHODS, PanelSettings
from e2i_pipelines.analytics.panel.settings import METHODS as METHOD_NAMES
from e2i_pipelines.analytics.panel.synth import block_design, synth_design, synthetic_control_panel
from e2i_pipelines.analytics.panel.twfe import did
from e2i_pipelines.core.errors import DataValidationError

Estimator = Callable[[PanelData, PanelSettings], PanelResult]

METHODS: dict[str, Estimator] = dict(zip(METHOD_NAMES, (
    did, callaway_santanna, synthetic_control_panel, synthetic_did_panel, dose_response_panel,
), strict=True))
"""Panel estimators by config ``method`` (names in :data:`.settings.METHODS`)."""


def resolve_panel_method(method: str, treatment_type: str) -> str:
    """``auto`` -> callaway_santanna (binary) or dose_response (continuous); else checked."""
    if method == "auto":
        method = "dose_response" if treatment_type == "continuous" else "callaway_santanna"
    if method not in METHODS:
        raise DataValidationError(
            f"config key 'method' is {method!r}; panel designs take one of {list(METHODS)}")
    if (treatment_type == "continuous") != (method in CONTINUOUS_METHODS):
        raise DataValidationError(
            f"config key 'method' {method!r} does not fit treatment_type {treatment_type!r}")
    return method


def _sdid_design(panel: PanelData, _settings: PanelSettings) -> object:
    return block_design(panel, "synthetic_did")


PRECHECKS: dict[str, Callable[[PanelData, PanelSettings], object]] = {
    "synthetic_control": synth_design,
    "synthetic_did": _sdid_design,
    "dose_response": dose_design,
}
"""Cheap structural checks of a method on a validated panel (no fitting)."""


def check_panel_input(df: pd.DataFrame, spec, method: str | None, settings: PanelSettings, *,
                      source: str = "data") -> tuple[str | None, PanelData]:
    """Everything checked before any estimation: ``method`` fits the spec, ``df`` is a valid
    panel (``load_panel``) and fits the method (e.g. synthetic control's max_treated_units).
    ``method`` None checks the panel only. Raises DataValidationError naming the key."""
    if method is not None:
        method = resolve_panel_method(method, spec.treatment_type)
    panel = load_panel(df, spec, source=source)
    if method in PRECHECKS:
        PRECHECKS[method](panel, settings)
    return method, panel


def run_panel(df: pd.DataFrame, spec, method: str, settings: PanelSettings, *,
              source: str = "data", checked: bool = False) -> tuple[PanelData, PanelResult]:
    """Validate ``df`` against ``spec`` (before any estimation), then estimate by ``method``.
    ``checked``: :func:`check_panel_input` passed on ``df`` with this method and settings
    already (the dataset step), so only :func:`load_panel`'s cheap assertions run again.
    Raises DataValidationError naming the key on bad input or config."""
    if checked:
        method = resolve_panel_method(method, spec.treatment_type)
        panel = load_panel(df, spec, source=source, checked=True)
    else:
        method, panel = check_panel_input(df, spec, method, settings, source=source)
    result = METHODS[method](panel, settings)
    result.warnings = [*panel.warnings, *result.warnings]
    return panel, result
