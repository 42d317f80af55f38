"""The storage layer on a real S3 API (moto's server on loopback) and on local disk."""

import json
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from e2i_pipelines.core import storage
from e2i_pipelines.core.storage import MANIFEST, E2IStorage


def _key(path) -> str:
    """The object key of a storage path (its path without the bucket)."""
    return path.path.split("/", 1)[1]


def _context(run_id: str, key: str = "digital_twins"):
    return SimpleNamespace(asset_key=dg.AssetKey(key), run=SimpleNamespace(run_id=run_id))


def test_default_is_local_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("E2I_STORAGE_URL", raising=False)
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path))
    assert storage.storage_url() == f"file://{tmp_path}"
    assert storage.storage_root() == tmp_path
    assert storage.storage_options() == {}
    final = E2IStorage().output_dir(_context("r1"))
    assert final == tmp_path / "digital_twins" / "r1"
    with E2IStorage().atomic_output(final) as tmp:
        (tmp / "a.txt").write_text("x")
    assert (final / "a.txt").read_text() == "x" and storage.is_committed(final)


def test_s3_options_from_env_and_secret_files(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("E2I_STORAGE_URL", "s3://bucket/prefix/")
    monkeypatch.delenv("E2I_S3_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "kid")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY_FILE", str(secret))
    opts = storage.storage_options()
    assert storage.storage_url() == "s3://bucket/prefix"
    assert (opts["endpoint_url"], opts["key"], opts["secret"]) == ("http://127.0.0.1:9", "kid",
                                                                   "from-file")
    assert str(storage.storage_root() / "x") == "s3://bucket/prefix/x"
    # plain http: the signed body hash is the check, no second CRC32 of every body ...
    assert opts["config_kwargs"]["request_checksum_calculation"] == "when_required"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.internal:9000")
    # ... https leaves botocore's default (unsigned body + CRC32)
    assert "request_checksum_calculation" not in storage.storage_options()["config_kwargs"]


def test_atomic_output_commits_with_manifest_last(s3):
    store = E2IStorage()
    final = store.output_dir(_context("run1"))
    frame = pd.DataFrame({"hcp_id": np.arange(50_000), "y": np.random.default_rng(0).normal(size=50_000)})
    with store.atomic_output(final) as tmp:
        frame.to_parquet(tmp / "twins.parquet", row_group_size=10_000)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "refutations.json").write_text(json.dumps({"ok": True}))
    prefix = f"{_key(final)}/"
    assert s3.keys(prefix) == [prefix + MANIFEST, prefix + "sub/refutations.json",
                               prefix + "twins.parquet"]
    assert storage.is_committed(final)
    assert storage.exists(final / "twins.parquet")
    assert storage.list_dir(final) == ["sub", "twins.parquet"]
    pf = storage.parquet_file(str(final / "twins.parquet"))
    assert pf.metadata.num_row_groups == 5
    pd.testing.assert_frame_equal(pf.read_row_group(2).to_pandas(), frame.iloc[20_000:30_000]
                                  .reset_index(drop=True))
    pd.testing.assert_frame_equal(storage.read_parquet(str(final / "twins.parquet"), ["y"]),
                                  frame[["y"]])
    assert json.loads(storage.read_text(str(final / "sub" / "refutations.json"))) == {"ok": True}
    with storage.local_copy(str(final / "sub" / "refutations.json")) as local:
        assert json.loads(local.read_text()) == {"ok": True}
    assert not local.exists()


def test_failure_midway_leaves_nothing_under_final_key(s3, tmp_path):
    store = E2IStorage()
    final = store.output_dir(_context("run2"))
    with pytest.raises(MemoryError), store.atomic_output(final) as tmp:
        pd.DataFrame({"a": range(1000)}).to_parquet(tmp / "part-0.parquet")
        raise MemoryError("killed midway")
    assert s3.keys(_key(final)) == []
    assert not storage.is_committed(final)
    assert list((tmp_path / "node" / ".staging").iterdir()) == []


def test_failed_upload_removes_partial_objects(s3, monkeypatch):
    store = E2IStorage()
    final = store.output_dir(_context("run3"))
    real_put = final.fs.put_file
    calls = []

    def put_then_fail(lpath, rpath, **kw):
        calls.append(rpath)
        if len(calls) == 2:
            raise ConnectionError("link dropped")
        return real_put(lpath, rpath, **kw)

    monkeypatch.setattr(final.fs, "put_file", put_then_fail)  # fsspec caches the instance
    with pytest.raises(ConnectionError), store.atomic_output(final) as tmp:
        for i in range(3):
            (tmp / f"part-{i}.bin").write_bytes(b"x" * 1000)
    assert len(calls) == 2
    assert s3.keys(_key(final)) == []


def test_objects_without_manifest_read_as_absent(s3):
    """What a run killed between upload and commit leaves: objects, no manifest."""
    final = E2IStorage().output_dir(_context("run4"))
    s3.client().put_object(Bucket=s3.bucket, Key=f"{_key(final)}/twins.parquet",
                           Body=b"half")
    assert not storage.is_committed(final)
    assert not storage.exists(final / "twins.parquet")


def test_rewrite_replaces_previous_output(s3):
    store = E2IStorage()
    final = store.output_dir(_context("run5"))
    for names in (["a", "b"], ["c"]):
        with store.atomic_output(final) as tmp:
            for name in names:
                (tmp / name).write_text(name)
    assert storage.list_dir(final) == ["c"]
