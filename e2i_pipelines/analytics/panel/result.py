"""The result of a panel estimator and the outputs written for it (panel_estimate.json, an
event-study plot when there is one, metadata the API reads, MLflow params/metrics)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from e2i_pipelines.core.jsonable import json_default
from e2i_pipelines.core.outputs import FilePath, Outputs, Plot

EVENT_COLUMNS = ["rel_period", "estimate", "ci_low", "ci_high"]


@dataclass
class PanelResult:
    """An overall estimate with its CI, plus per-estimator tables.

    ``event_study`` rows: rel_period (periods since treatment; < 0 are leads), estimate,
    ci_low, ci_high. ``cohorts``: one row per cohort (or ATT(g,t) cell). ``extra``: anything
    else JSON-able (weights, gaps, curves). ``warnings``: recorded problems (staggered TWFE,
    unbalanced panel...).
    """

    estimate: float
    se: float
    ci: tuple[float, float]
    method: str
    n_units: int
    n_periods: int
    confidence_level: float = 0.95
    event_study: pd.DataFrame | None = None
    cohorts: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    true_value: float | None = None

    def summary(self) -> dict[str, Any]:
        """panel_estimate.json (and the API's results)."""
        return {
            "estimate": self.estimate, "std_error": self.se, "ci_low": self.ci[0],
            "ci_high": self.ci[1], "confidence_level": self.confidence_level,
            "method": self.method, "design": "panel", "n_units": self.n_units,
            "n_periods": self.n_periods, "true_value": self.true_value,
            "event_study": _records(self.event_study), "cohorts": _records(self.cohorts),
            "extra": self.extra, "warnings": self.warnings,
        }

    def outputs(self) -> Outputs:
        """Files, metadata and MLflow values in the style of the cross-section estimate."""
        files: dict[str, Any] = {"panel_estimate.json": json.dumps(
            self.summary(), indent=2, default=json_default)}
        if self.event_study is not None and len(self.event_study):
            files["event_study.png"] = Plot(event_study_figure(self.event_study, self.method),
                                            "event study", key="event_study_plot")
        metadata: dict[str, Any] = {
            "estimate": self.estimate, "ci_low": self.ci[0], "ci_high": self.ci[1],
            "std_error": self.se, "confidence_level": self.confidence_level,
            "method": self.method, "design": "panel", "n_units": self.n_units,
            "n_periods": self.n_periods, "panel_warnings": list(self.warnings),
            "path": FilePath("panel_estimate.json"),
        }
        if self.event_study is not None:
            metadata["event_study"] = _records(self.event_study)
        if self.cohorts is not None:
            metadata["cohorts"] = _records(self.cohorts)
        if self.true_value is not None:
            metadata["true_value"] = self.true_value
            metadata["true_value_in_ci"] = bool(self.ci[0] <= self.true_value <= self.ci[1])
        metrics = {"estimate": self.estimate, "ci_low": self.ci[0], "ci_high": self.ci[1],
                   "std_error": self.se}
        params = {"method": self.method, "design": "panel", "n_units": self.n_units,
                  "n_periods": self.n_periods, "confidence_level": self.confidence_level}
        return Outputs(files=files, metadata=metadata, params=params, metrics=metrics)


def _records(table: pd.DataFrame | None) -> list[dict[str, Any]] | None:
    if table is None:
        return None
    return json.loads(json.dumps(table.to_dict("records"), default=json_default))


def event_study_figure(table: pd.DataFrame, title: str):
    """Estimates by relative period with their CIs; leads left of the dashed line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = table["rel_period"].to_numpy()
    est = table["estimate"].to_numpy()
    ax.errorbar(x, est, yerr=[est - table["ci_low"].to_numpy(),
                              table["ci_high"].to_numpy() - est], fmt="o", capsize=3)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.axvline(-0.5, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("periods since treatment")
    ax.set_ylabel("effect")
    ax.set_title(f"event study ({title})")
    return fig
