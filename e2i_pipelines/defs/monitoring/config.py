"""Run config of the ``run_costs`` asset: which UTC day to report."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field, field_validator


class RunCostsConfig(dg.Config):
    """Which UTC day to report (default: yesterday)."""

    day: str = Field(default="", description="YYYY-MM-DD (UTC); empty: yesterday")

    @field_validator("day")
    @classmethod
    def _iso_day(cls, value: str) -> str:
        if value:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"day {value!r} is not a date like 2026-12-01") from None
        return value

    def window(self, now: float) -> tuple[date, float, float]:
        day = (date.fromisoformat(self.day) if self.day
               else datetime.fromtimestamp(now, UTC).date() - timedelta(days=1))
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        return day, start, start + 86_400
