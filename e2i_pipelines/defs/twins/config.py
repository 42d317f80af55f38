"""Run config of the digital-twin assets, checked before any heavy work."""

from typing import Any, Literal

import dagster as dg
from pydantic import Field

from e2i_pipelines.analytics.twins.targeting import OPS, TargetingError, TargetingRule
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
    """The targeting policy compared with treat-all and treat-none.

    Rules are data, never code: ``conditions`` is a list of ``{column, op, value}`` (all must
    hold; ``{any: [...]}``, ``{all: [...]}``, ``{not: ...}`` nest), ``query`` a string parsed
    with ``ast`` into the same structure. Syntax is checked by ``check()`` (the API's 422),
    columns and value types at step start on the twins, before the simulation.
    """

    targeting: Literal["conditions", "query", "top_share"] = Field(
        default="top_share", description="'conditions': structured rule; 'query': the same "
        "as a string (comparisons, and/or/not, column names, constants only); 'top_share': "
        "treat the top share by score_column.")
    conditions: list[Any] = Field(
        default=[], description="e.g. [{column: engagement_score, op: '>', value: 0.5}, "
        "{column: region, op: in, value: [Northeast, South]}] (targeting=conditions); ops: "
        f"{', '.join(OPS)}; groups {{any: [...]}}, {{all: [...]}}, {{not: ...}}.")
    query: str = Field(default="", description="e.g. \"engagement_score > 0.5 and region == "
                       "'Northeast'\" (targeting=query).")
    top_share: float = Field(default=0.2, description="Share treated (targeting=top_share).")
    score_column: str = Field(default="uplift", description="Twin column, or 'uplift' (the "
                              "model's predicted individual uplift).")
    chunk_rows: int = Field(default=250_000, description="Twins per chunk.")

    def check(self) -> None:
        """Raise dg.Failure naming a bad field or a refused construct of the rule."""
        self.rule()

    def rule(self) -> TargetingRule:
        """The targeting rule; raises dg.Failure naming the bad field."""
        _fail_if({"chunk_rows": self.chunk_rows < 1}, "twin_interventions", self.model_dump())
        unused = [name for name, value in (("conditions", self.conditions), ("query", self.query))
                  if value and name != self.targeting]
        try:
            if unused:
                raise TargetingError(f"{unused[0]} is given but targeting is "
                                     f"{self.targeting!r}; set targeting: {unused[0]}")
            if self.targeting == "conditions":
                return TargetingRule(conditions=list(self.conditions))
            if self.targeting == "query":
                return TargetingRule(query=self.query)
            return TargetingRule(top_share=self.top_share, score_column=self.score_column)
        except TargetingError as exc:
            raise dg.Failure(f"twin_interventions config: {exc}") from None
