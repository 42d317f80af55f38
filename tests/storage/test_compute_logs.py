"""Compute logs follow the storage URL: S3 (moto) through dagster_aws, else the local folder."""

import dagster as dg
from dagster_aws.s3 import S3ComputeLogManager

from e2i_pipelines.core.storage import default_data_dir

MANAGER = {"module": "e2i_pipelines.core.compute_logs", "class": "StorageComputeLogManager",
           "config": {"upload_interval": 1}}


@dg.asset
def chatty() -> int:
    print("hello from the step")  # noqa: T201 - the captured stdout under test
    return 1


def _run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize([chatty], instance=instance,
                            resources={"io_manager": dg.mem_io_manager})
    assert result.success
    return result


def test_s3_url_sends_compute_logs_to_the_bucket(s3, tmp_path):
    with dg.instance_for_test(overrides={"compute_logs": MANAGER}) as instance:
        manager = instance.compute_log_manager
        assert isinstance(manager, S3ComputeLogManager)
        _run(instance)
        manager.dispose()
    keys = s3.keys(f"{tmp_path.name}/compute_logs/")
    assert any(k.endswith(".out") for k in keys), keys
    body = b"".join(s3.client().get_object(Bucket=s3.bucket, Key=k)["Body"].read()
                    for k in keys if k.endswith(".out"))
    assert b"hello from the step" in body


def test_local_url_keeps_the_local_manager(monkeypatch, tmp_path):
    monkeypatch.delenv("E2I_STORAGE_URL", raising=False)
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path))
    with dg.instance_for_test(overrides={"compute_logs": MANAGER}) as instance:
        _run(instance)
    logs = list((tmp_path / ".dagster" / "compute_logs").rglob("*.out"))
    assert default_data_dir() == str(tmp_path)
    assert any(b"hello from the step" in p.read_bytes() for p in logs), logs
