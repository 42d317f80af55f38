"""Code location of the Ray launcher tests: probe jobs, the OOM promotion and scaler sensors.

The same objects ``e2i_pipelines.definitions`` registers, without the analytics imports, so a run
worker on a Ray node starts in about 2 s of CPU and fits the small test tiers.
"""

import dagster as dg

from e2i_pipelines.defs.diagnostics.assets import probe_assets, probe_jobs
from e2i_pipelines.defs.launch.sensors import oom_promotion_sensor
from e2i_pipelines.defs.scaling.sensors import heavy_scaler_sensor

defs = dg.Definitions(assets=probe_assets, jobs=probe_jobs,
                      sensors=[oom_promotion_sensor, heavy_scaler_sensor])
