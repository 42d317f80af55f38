"""A small code location for the scaler's daemon test: the probe jobs and the scaler sensor.

They are the same objects ``e2i_pipelines.definitions`` registers, without the analytics
imports, so each run process starts in about 2 s of CPU instead of about 10 s on 2 cores.
"""

import dagster as dg

from e2i_pipelines.defs.diagnostics.assets import probe_assets, probe_jobs
from e2i_pipelines.defs.scaling.sensors import heavy_scaler_sensor

defs = dg.Definitions(assets=probe_assets, jobs=probe_jobs, sensors=[heavy_scaler_sensor])
