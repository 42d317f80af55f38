"""The heavy-run scaler sensor: sets the heavy pool's limit from capacity and demand.

Runs by default (it is the platform's scaler). Every tick records its decision and inputs as
JSON in the cursor, in the tick log and in the tick message; it writes the pool limit only
when the value changes, and never touches running runs.
"""

from __future__ import annotations

import json

import dagster as dg

from e2i_pipelines.scaler import SCALER_SENSOR_NAME
from e2i_pipelines.scaler.config import ScalerConfig, load_config
from e2i_pipelines.scaler.evaluation import apply, evaluate


def build_heavy_scaler_sensor(config: ScalerConfig) -> dg.SensorDefinition:
    """The scaler sensor for ``config`` (interval from the config)."""

    @dg.sensor(
        name=SCALER_SENSOR_NAME,
        minimum_interval_seconds=config.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Caps concurrent heavy runs ({config.min_heavy_runs}..{config.max_heavy_runs}) "
            "from host capacity and heavy demand; the cursor holds the last decision."
        ),
    )
    def heavy_scaler(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        evaluation = evaluate(context.instance, config)
        wrote = apply(context.instance, evaluation)
        summary = evaluation.decision.summary()
        context.log.info(summary)
        record = {**evaluation.record(), "wrote": wrote}
        return dg.SensorResult(skip_reason=summary, cursor=json.dumps(record, sort_keys=True))

    return heavy_scaler


heavy_scaler_sensor = build_heavy_scaler_sensor(load_config())
