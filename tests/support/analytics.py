"""Upstream refs (dataset file, outcome model) for the analytics assets, and materializing
those assets in-process on them."""

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import lightgbm as lgb
import pandas as pd

from e2i_pipelines.core.refs import DatasetRef, ModelRef
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker
from e2i_pipelines.data.synthetic import SPEC, generate_e2i


def write_upstream(root: Path, rows: int, seed: int, num_leaves: int, rounds: int,
                   row_group_size: int | None = None) -> tuple[DatasetRef, ModelRef, pd.DataFrame]:
    """A synthetic E2I dataset file under ``root`` and a LightGBM outcome model trained on it."""
    frame, truth = generate_e2i(rows, seed=seed)
    frame.to_parquet(root / "data.parquet", row_group_size=row_group_size)
    data_ref = DatasetRef(str(root / "data.parquet"), SPEC, len(frame), "hcp_id", truth)
    feats = [SPEC.treatment, *SPEC.covariates]
    categories = {c: list(frame[c].cat.categories) for c in ("region", "specialty")}
    booster = lgb.train({"objective": "regression", "num_leaves": num_leaves, "verbose": -1,
                         "num_threads": 1}, lgb.Dataset(frame[feats], frame[SPEC.outcome]),
                        rounds)
    booster.save_model(str(root / "model.txt"))
    model_ref = ModelRef(str(root / "model.txt"), feats, SPEC.treatment, SPEC.outcome, categories)
    return data_ref, model_ref, frame


def materialize_on_upstream(
    assets: Sequence[dg.AssetsDefinition], data_ref: DatasetRef, model_ref: ModelRef,
    tmp_path, monkeypatch, run_config: dict, selection=None,
) -> dg.ExecuteInProcessResult:
    """Run ``assets`` with ``dataset``/``outcome_model`` stubbed by the given refs; storage and
    a SQLite MLflow store under ``tmp_path``; failures returned, not raised."""
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path))

    @dg.asset(name="dataset")
    def dataset_stub() -> DatasetRef:
        return data_ref

    @dg.asset(name="outcome_model")
    def outcome_model_stub() -> ModelRef:
        return model_ref

    return dg.materialize(
        [dataset_stub, outcome_model_stub, *assets],
        resources={"storage": E2IStorage(root=str(tmp_path)),
                   "mlflow": MlflowTracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")},
        run_config={"ops": run_config}, selection=selection, raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )


def materialization_metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    """Metadata values of the single materialization of ``key`` in ``result``."""
    mats = list(result.asset_materializations_for_node(key))
    assert len(mats) == 1
    return {k: v.value for k, v in mats[0].metadata.items()}
