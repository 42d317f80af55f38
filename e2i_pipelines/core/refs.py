"""Small handles passed between assets; the data itself lives in Parquet/model files.

Every ``*Ref`` lives here. They hold paths and plain settings only; the code that reads
them back lives with its analysis (e.g. ``analytics.causal.estimate.estimate_fit``), so this
module imports nothing above ``core`` at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from e2i_pipelines.core.spec import CausalSpec

if TYPE_CHECKING:  # annotations only: refs sit below the analytics that fill them
    from e2i_pipelines.analytics.causal.estimate import EstimateResult
    from e2i_pipelines.analytics.causal.settings import EstimatorSettings, RefuterSettings
from e2i_pipelines.core.storage import read_parquet, read_text


@dataclass(frozen=True)
class DatasetRef:
    """A validated dataset in storage (a path or URL). ``id_column`` always exists in the file."""

    path: str
    spec: CausalSpec
    n_rows: int
    id_column: str
    truth: dict[str, Any] | None = None  # synthetic data: true ATE and structure
    panel: DatasetRef | None = None  # the whole panel when this is its cross-section

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        return read_parquet(self.path, columns=columns)


@dataclass(frozen=True)
class FeatureStoreRef:
    """A Feast repo that has been applied and materialized.

    ``repo_path`` is the folder Feast was applied in on the node that ran ``feature_store``;
    ``storage_path`` the committed output folder (its ``features.parquet``), from which any
    other node builds its own copy of the repo."""

    repo_path: str
    feature_view: str
    entity_column: str
    feature_names: list[str]
    storage_path: str = ""  # empty in refs written before it existed: repo_path only


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

        return lgb.Booster(model_str=read_text(self.model_path))

    def model_frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """Model input columns of ``df`` with categoricals coded exactly as in training."""
        out = df[self.feature_names].copy()
        for col, levels in self.categories.items():
            out[col] = pd.Categorical(out[col].astype(str), categories=levels)
        return out


@dataclass(frozen=True)
class CausalEstimateRef:
    """The estimate and everything the refutation checks need to rebuild its fit."""

    dataset: DatasetRef
    result: EstimateResult
    settings: RefuterSettings
    estimator: EstimatorSettings
    max_rows: int
    seed: int
    scores_path: str | None = None  # EffectScores of score-based estimators (.npz)
    true_ate: float | None = None
    mlflow_run_id: str | None = None

    @property
    def method(self) -> str:
        return self.result.method


@dataclass(frozen=True)
class TwinsRef:
    """Digital twins in storage (a Parquet dataset folder of part files) and how they were made."""

    path: str
    n_rows: int
    columns: list[str]  # modelled columns (the file also has ``twin_id``)
    treatment: str
    model_path: str  # pickled CopulaModel
    seed: int
    fidelity: dict[str, Any] = field(default_factory=dict)
    source_dataset: str | None = None

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        return read_parquet(self.path, columns=columns)
