"""MLflow tracking: local SQLite + artifact folder by default, a server via MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from e2i_pipelines.core.storage import default_data_dir


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store under the data dir."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(default_data_dir()) / 'mlflow.db'}"


class MlflowTracker(dg.ConfigurableResource):
    """Opens MLflow runs tagged with the Dagster run and asset that produced them."""

    tracking_uri: str = ""
    experiment: str = "e2i"

    @property
    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri()

    def _experiment_id(self) -> str:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        found = mlflow.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        artifact_location = None
        if self.uri.startswith("sqlite:"):
            artifacts = Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts"
            artifact_location = artifacts.resolve().as_uri()
        try:
            return mlflow.create_experiment(self.experiment, artifact_location=artifact_location)
        except Exception:  # noqa: BLE001 - created concurrently by another run
            return mlflow.get_experiment_by_name(self.experiment).experiment_id

    @contextmanager
    def start_run(self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                  run_name: str, tags: dict[str, str] | None = None) -> Iterator:
        """An MLflow run tagged with dagster_run_id and the asset key."""
        import mlflow

        Path(default_data_dir()).mkdir(parents=True, exist_ok=True)
        experiment_id = self._experiment_id()
        all_tags = {"dagster_run_id": context.run.run_id, "e2i_asset": run_name, **(tags or {})}
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=all_tags) as run:
            yield run
