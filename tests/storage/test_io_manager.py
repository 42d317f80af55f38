"""Dagster's UPath pickle IO manager on <E2I_STORAGE_URL>/io: a round trip through moto's S3."""

import pickle

import dagster as dg

from e2i_pipelines.core.storage import E2IStorage, StorageIOManager
from e2i_pipelines.definitions import resources


@dg.asset
def upstream() -> dict:
    return {"rows": 3, "values": [1.5, 2.5, 3.5]}


@dg.asset
def downstream(upstream: dict) -> float:
    return sum(upstream["values"]) / upstream["rows"]


def test_definitions_use_the_storage_io_manager():
    assert isinstance(resources["io_manager"], StorageIOManager)
    assert isinstance(resources["storage"], E2IStorage)


def test_round_trip_through_s3(s3, tmp_path):
    result = dg.materialize([upstream, downstream], resources={"io_manager": StorageIOManager()},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert result.output_for_node("downstream") == 2.5
    prefix = f"{tmp_path.name}/io/"
    assert s3.keys(prefix) == [prefix + "downstream", prefix + "upstream"]
    body = s3.client().get_object(Bucket=s3.bucket, Key=prefix + "upstream")["Body"].read()
    assert pickle.loads(body) == {"rows": 3, "values": [1.5, 2.5, 3.5]}  # noqa: S301 - our own test object
    assert not (tmp_path / "node" / "io").exists()  # nothing on the local disk


def test_local_default_is_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("E2I_STORAGE_URL", raising=False)
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path))
    result = dg.materialize([upstream, downstream], resources={"io_manager": StorageIOManager()},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    with open(tmp_path / "io" / "upstream", "rb") as handle:
        assert pickle.load(handle)["rows"] == 3  # noqa: S301 - our own test object
