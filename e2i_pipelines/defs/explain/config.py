"""Run config of the SHAP assets, checked before any heavy work."""

import dagster as dg
from pydantic import Field

from e2i_pipelines.analytics.explain.settings import BACKGROUND_SOURCES, METHODS, PERTURBATIONS
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
    feature_perturbation: str = Field(
        default="tree_path_dependent",
        description=f"{list(PERTURBATIONS)}: follow the trees' cover fractions, or average "
                    "over background rows (interventional, needs method 'fast').")
    background_rows: int = Field(default=1_000, description="Interventional only: rows in "
                                 "the background set (seeded sample).")
    background_source: str = Field(default="population", description=f"{list(BACKGROUND_SOURCES)}"
                                   ": sample the background from all rows or the control arm "
                                   "(treatment == 0).")

    def check(self) -> None:
        """Raise dg.Failure naming every invalid field."""
        interventional = self.feature_perturbation == "interventional"
        problems = {
            "method": self.method not in METHODS or (interventional and self.method != "fast"),
            "feature_perturbation": self.feature_perturbation not in PERTURBATIONS,
            "background_rows": interventional and not 0 < self.background_rows <= 1_000_000,
            "background_source": self.background_source not in BACKGROUND_SOURCES,
            "chunk_rows": not 0 < self.chunk_rows <= 10_000_000,
            "max_rows": self.max_rows < 0,
            "sample_rows": not 10 <= self.sample_rows <= 1_000_000,
            "top_k": self.top_k < 1,
        }
        bad = {name: getattr(self, name) for name, wrong in problems.items() if wrong}
        if bad:
            raise dg.Failure(
                f"shap config invalid: {bad}; method must be one of {list(METHODS)} ('fast' "
                f"for interventional), feature_perturbation one of {list(PERTURBATIONS)}, "
                "background_rows in 1..1,000,000 (and at most the rows available), "
                f"background_source one of {list(BACKGROUND_SOURCES)}, chunk_rows in "
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
