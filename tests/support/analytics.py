"""Materialize analytics assets in-process on given upstream refs (dataset, outcome model)."""

from collections.abc import Sequence

import dagster as dg

from e2i_pipelines.core.refs import DatasetRef, ModelRef
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker


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
