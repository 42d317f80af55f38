"""The shared output writer (core/outputs.py) in a real in-process Dagster run with a real
SQLite MLflow store: files, metadata and MLflow agree, and a failure leaves nothing behind."""

from __future__ import annotations

import json

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from e2i_pipelines.core.outputs import FilePath, Outputs, Plot, asset_outputs, write_outputs
from e2i_pipelines.core.plots import plt
from e2i_pipelines.core.storage import E2IStorage
from e2i_pipelines.core.tracking import MlflowTracker


def _figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def _outputs() -> Outputs:
    def write_npz(path):
        np.savez(path, a=np.arange(3))

    return Outputs(
        files={"report.json": json.dumps({"x": 1}), "raw.bin": b"\x00\x01",
               "plot.png": Plot(_figure(), "a plot", key="plot"), "arrays.npz": write_npz},
        metadata={"n": np.int64(7), "names": ["a", "b"], "table": pd.DataFrame({"c": [1, 2]}),
                  "report_path": FilePath("report.json"), "label": "ok"},
        params={"method": "m"}, metrics={"score": 0.5}, tags={"origin": "test"},
        artifacts=["report.json", "plot.png"])


def _run(asset, tmp_path, monkeypatch) -> dg.ExecuteInProcessResult:
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path / "data"))
    return dg.materialize([asset], raise_on_error=False, resources={
        "storage": E2IStorage(root=str(tmp_path / "data")),
        "mlflow": MlflowTracker(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                experiment="outputs-test")})


def test_write_outputs_files_metadata_and_mlflow(tmp_path, monkeypatch):
    @dg.asset(name="writer_asset")
    def writer_asset(context, storage: E2IStorage, mlflow: MlflowTracker):
        written = write_outputs(context, storage, mlflow, "writer_asset", _outputs())
        return dg.Output(written.path("report.json"), metadata=written.metadata)

    result = _run(writer_asset, tmp_path, monkeypatch)
    assert result.success
    path = result.output_for_node("writer_asset")
    folder = tmp_path / "data" / "writer_asset" / result.run_id
    assert path == str(folder / "report.json")
    assert json.loads((folder / "report.json").read_text()) == {"x": 1}
    assert (folder / "raw.bin").read_bytes() == b"\x00\x01"
    assert (folder / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(folder / "arrays.npz") as z:
        assert z["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in folder.parent.iterdir()) == [result.run_id]  # no temp left

    mat = list(result.asset_materializations_for_node("writer_asset"))[0]
    meta = mat.metadata
    assert meta["n"].value == 7
    assert meta["names"].value == ["a", "b"]
    assert meta["table"].value == pd.DataFrame({"c": [1, 2]}).to_markdown(index=False)
    assert meta["report_path"].value == str(folder / "report.json")
    assert meta["label"].value == "ok"
    assert meta["plot"].value.startswith("![a plot](data:image/png;base64,")

    run_id = meta["mlflow_run_id"].value
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run(run_id)
    assert run.data.params == {"method": "m"}
    assert run.data.metrics == {"score": 0.5}
    assert run.data.tags["origin"] == "test"
    assert run.data.tags["dagster_run_id"] == result.run_id
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert logged == {"report.json", "plot.png"}


def test_failure_inside_staging_leaves_nothing(tmp_path, monkeypatch):
    @dg.asset(name="failing_asset")
    def failing_asset(context, storage: E2IStorage, mlflow: MlflowTracker):
        with asset_outputs(context, storage, mlflow, "failing_asset") as out:
            (out.folder / "partial.parquet").write_bytes(b"half")
            raise dg.Failure("stream broke")

    result = _run(failing_asset, tmp_path, monkeypatch)
    assert not result.success
    parent = tmp_path / "data" / "failing_asset"
    assert not parent.exists() or list(parent.iterdir()) == []
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name("outputs-test")
    assert experiment is None or mlflow.search_runs([experiment.experiment_id]).empty
