"""Run config of the digital-twin assets, checked before any heavy work."""

from typing import Literal

import dagster as dg
from pydantic import Field

from e2i_pipelines.analytics.twins.interventions import TargetingError, TargetingRule
from e2i_pipelines.core.fanout import FAN_OUT_HELP

MAX_TWINS = 200_000_000


def _fail_if(problems: dict[str, bool], asset: str, values: dict[str, object]) -> None:
    bad = [name for name, wrong in problems.items() if wrong]
    if bad:
        shown = {b: values[b] for b in bad}
        raise dg.Failure(f"{asset} config out of range: {shown}")


class DigitalTwinsConfig(dg.Config):
    """How many twins to sample, in which chunks, and how the population model is fitted."""

    n_twins: int = Field(default=1_000_000, description=f"Twins to sample (1..{MAX_TWINS:,}).")
    chunk_rows: int = Field(default=250_000, description="Twins per chunk (bounds memory).")
    seed: int = Field(default=0, description="Seed of the model fit and of the sampling.")
    fit_rows: int = Field(default=200_000, description="Real rows sampled to fit the model.")
    grid_size: int = Field(default=1024, description="Quantiles stored per marginal.")
    min_stratum_rows: int = Field(
        default=200, description="Smaller discrete strata borrow the treatment-level copula.")
    ks_rows: int = Field(default=200_000, description="Twins used for the KS statistics.")
    fan_out: bool = Field(default=False, description=FAN_OUT_HELP)

    def check(self) -> None:
        """Raise dg.Failure naming every out-of-range field."""
        _fail_if({
            "n_twins": not 0 < self.n_twins <= MAX_TWINS,
            "chunk_rows": self.chunk_rows < 1,
            "fit_rows": self.fit_rows < 100,
            "grid_size": not 16 <= self.grid_size <= 65_536,
            "min_stratum_rows": self.min_stratum_rows < 10,
            "ks_rows": self.ks_rows < 100,
        }, "digital_twins", self.model_dump())


class TwinInterventionsConfig(dg.Config):
    """The targeting policy compared with treat-all and treat-none."""

    targeting: Literal["query", "top_share"] = Field(
        default="top_share", description="'query': pandas query over twin columns; "
        "'top_share': treat the top share by score_column.")
    query: str = Field(default="", description="e.g. \"engagement_score > 0.5 and region == "
                       "'Northeast'\" (targeting=query).")
    top_share: float = Field(default=0.2, description="Share treated (targeting=top_share).")
    score_column: str = Field(default="uplift", description="Twin column, or 'uplift' (the "
                              "model's predicted individual uplift).")
    chunk_rows: int = Field(default=250_000, description="Twins per chunk.")

    def rule(self) -> TargetingRule:
        """The targeting rule; raises dg.Failure naming the bad field."""
        _fail_if({"chunk_rows": self.chunk_rows < 1}, "twin_interventions", self.model_dump())
        try:
            if self.targeting == "query":
                return TargetingRule(query=self.query)
            return TargetingRule(top_share=self.top_share, score_column=self.score_column)
        except TargetingError as exc:
            raise dg.Failure(f"twin_interventions config: {exc}") from None
