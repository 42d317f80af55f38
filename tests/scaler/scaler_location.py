"""A small code location for the scaler's daemon test: the probe jobs and the scaler sensor.

They are the same objects ``e2i_pipelines.definitions`` registers, without the analytics
imports, so each run process starts in about 2 s of CPU instead of about 10 s on 2 cores.
"""

from e2i_pipelines.defs.diagnostics.assets import probe_definitions
from e2i_pipelines.defs.scaler.sensors import heavy_scaler_sensor

defs = probe_definitions(heavy_scaler_sensor)
