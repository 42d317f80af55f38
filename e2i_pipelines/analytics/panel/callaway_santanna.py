"""``callaway_santanna``: ATT(g,t) by cohort and period (placeholder until implemented)."""

from __future__ import annotations

from e2i_pipelines.analytics.panel.data import PanelData
from e2i_pipelines.analytics.panel.result import PanelResult
from e2i_pipelines.analytics.panel.settings import PanelSettings


def callaway_santanna(panel: PanelData, settings: PanelSettings) -> PanelResult:
    raise NotImplementedError("callaway_santanna is being implemented")
