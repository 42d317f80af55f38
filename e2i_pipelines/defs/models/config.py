"""Run config of the ``outcome_model`` asset: sample size and LightGBM hyper-parameters."""

import dagster as dg
from pydantic import Field


class OutcomeModelConfig(dg.Config):
    """Training sample size and LightGBM hyper-parameters."""

    train_rows: int = Field(default=200_000, description="Rows retrieved from Feast to train on.")
    n_estimators: int = Field(default=200, description="Boosting rounds (trees).")
    num_leaves: int = Field(default=31, description="Leaves per tree.")
    learning_rate: float = Field(default=0.05, description="Shrinkage.")
    holdout_share: float = Field(default=0.2, description="Share of rows kept for metrics.")
    seed: int = 0

    def check(self) -> None:
        """Raise dg.Failure naming the first out-of-range field."""
        problems = {
            "train_rows": self.train_rows < 100,
            "n_estimators": self.n_estimators < 1,
            "num_leaves": self.num_leaves < 2,
            "learning_rate": not 0 < self.learning_rate <= 1,
            "holdout_share": not 0 < self.holdout_share < 0.9,
        }
        bad = [name for name, wrong in problems.items() if wrong]
        if bad:
            raise dg.Failure(f"outcome_model config out of range: {bad} = "
                             f"{[getattr(self, b) for b in bad]}")
