"""The e2i code location: every area's assets, checks, jobs, schedules and sensors."""

from __future__ import annotations

import dagster as dg

from e2i_pipelines.defs.diagnostics.assets import probe_assets, probe_jobs

defs = dg.Definitions(
    assets=[*probe_assets],
    jobs=[*probe_jobs],
)
