"""Run config of the probe assets: memory to allocate, time to hold it, MiB to write."""

import dagster as dg
from pydantic import Field


class ProbeConfig(dg.Config):
    """How much memory a probe run allocates and how long it holds it."""

    allocate_mb: int = Field(default=0, ge=0, le=1_048_576, description="MiB to allocate.")
    hold_seconds: float = Field(default=0.0, ge=0, le=86_400, description="Seconds to hold it.")
    write_mb: int = Field(default=0, ge=0, le=65_536, description="MiB to write to the output folder.")
    fail_message: str = Field(
        default="", description="If set, fail the step with this message (checks failure reporting)."
    )
