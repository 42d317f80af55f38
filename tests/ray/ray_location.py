"""Code location of the Ray launcher tests: probe jobs, the OOM promotion and scaler sensors.

The same objects ``e2i_pipelines.definitions`` registers, without the analytics imports, so a run
worker on a Ray node starts in about 2 s of CPU and fits the small test tiers.
"""

from e2i_pipelines.defs.diagnostics.assets import probe_definitions
from e2i_pipelines.defs.launcher.sensors import build_oom_promotion_sensor
from e2i_pipelines.defs.scaler.sensors import heavy_scaler_sensor

# Promotion looked for every 2 s, not 10: the OOM test waits for it.
defs = probe_definitions(build_oom_promotion_sensor(minimum_interval_seconds=2),
                         heavy_scaler_sensor)
