"""Run config of the SHAP assets, checked before any heavy work."""

import dagster as dg
from pydantic import Field

from e2i_pipelines.analytics.explain.treeshap import METHODS
from e2i_pipelines.core.fanout import FAN_OUT_HELP


class ShapConfig(dg.Config):
    """Which rows to explain, how, and in which chunks."""

    method: str = Field(default="fast", description=f"TreeSHAP implementation: {list(METHODS)}. "
                        "'fast': numba subset tables (exact); 'lightgbm': pred_contrib.")
    chunk_rows: int = Field(default=50_000, description="Rows per chunk (bounds memory).")
    max_rows: int = Field(default=0, description="Explain the first max_rows rows (0 = all).")
    sample_rows: int = Field(default=5_000, description="Uniform sample kept for the beeswarm.")
    top_k: int = Field(default=15, description="Features shown in plots and top_features.")
    seed: int = Field(default=0, description="Seed of the plot sample.")
    fan_out: bool = Field(default=False, description=FAN_OUT_HELP)

    def check(self) -> None:
        """Raise dg.Failure naming every invalid field."""
        problems = {
            "method": self.method not in METHODS,
            "chunk_rows": not 0 < self.chunk_rows <= 10_000_000,
            "max_rows": self.max_rows < 0,
            "sample_rows": not 10 <= self.sample_rows <= 1_000_000,
            "top_k": self.top_k < 1,
        }
        bad = {name: getattr(self, name) for name, wrong in problems.items() if wrong}
        if bad:
            hint = f" (method must be one of {list(METHODS)})" if "method" in bad else ""
            raise dg.Failure(f"shap config invalid: {bad}{hint}; chunk_rows must be in "
                             "1..10,000,000, max_rows >= 0 (0 = all), sample_rows 10..1,000,000")


class ShapSummaryConfig(dg.Config):
    """The sampled global summary: how many rows, which seed."""

    sample_rows: int = Field(default=20_000, description="Rows sampled from the dataset.")
    top_k: int = Field(default=15, description="Features shown in the plot.")
    seed: int = Field(default=0, description="Seed of the row sample.")

    def check(self) -> None:
        problems = {"sample_rows": not 10 <= self.sample_rows <= 2_000_000, "top_k": self.top_k < 1}
        bad = {name: getattr(self, name) for name, wrong in problems.items() if wrong}
        if bad:
            raise dg.Failure(f"shap_summary config invalid: {bad}; sample_rows must be in "
                             "10..2,000,000, top_k >= 1")
