"""Heavy-run scaler: decides how many heavy runs may be in progress at once (see issue 5).

Plain modules: ``config`` (YAML settings), ``profile`` (one heavy run's needs), ``capacity``
(host CPU/memory), ``decision`` (the pure rule), ``evaluation`` (instance reads + pool write),
``cli`` (dry run). The Dagster sensor lives in ``e2i_pipelines.defs.scaler.sensors``.
"""

SCALER_SENSOR_NAME = "e2i_heavy_scaler"
"""Name of the scaler sensor (its cursor holds the decision history the monitoring reads)."""
