"""Small handles passed between assets; the data itself lives in Parquet/model files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from e2i_pipelines.core.spec import CausalSpec


@dataclass(frozen=True)
class DatasetRef:
    """A validated dataset on disk. ``id_column`` always exists in the file."""

    path: str
    spec: CausalSpec
    n_rows: int
    id_column: str
    truth: dict[str, Any] | None = None  # synthetic data: true ATE and structure

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.path, columns=columns)


@dataclass(frozen=True)
class FeatureStoreRef:
    """A Feast repo that has been applied and materialized."""

    repo_path: str
    feature_view: str
    entity_column: str
    feature_names: list[str]


@dataclass(frozen=True)
class ModelRef:
    """The outcome model: LightGBM text model + how to build its input frame."""

    model_path: str
    feature_names: list[str]  # model inputs in order; includes the treatment column
    treatment: str
    target: str
    categories: dict[str, list[str]] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    def load_booster(self):
        import lightgbm as lgb

        return lgb.Booster(model_file=self.model_path)

    def model_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """Model input columns of ``df`` with categoricals coded exactly as in training."""
        out = df[self.feature_names].copy()
        for col, levels in self.categories.items():
            out[col] = pd.Categorical(out[col].astype(str), categories=levels)
        return out
