"""A run process SIGKILLed mid-write leaves no readable output on S3 (moto's server).

The writer is a real child process using E2IStorage.atomic_output; it is killed while it
stages its files, and while it uploads them (after some objects reached the bucket)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from e2i_pipelines.core import storage
from e2i_pipelines.core.storage import MANIFEST

WRITER = textwrap.dedent('''
    import sys, time
    from types import SimpleNamespace
    import dagster as dg
    from e2i_pipelines.core.storage import E2IStorage

    store = E2IStorage()
    ctx = SimpleNamespace(asset_key=dg.AssetKey("digital_twins"),
                          run=SimpleNamespace(run_id=sys.argv[1]))
    final = store.output_dir(ctx)
    real_put = final.fs.put_file

    def put(lpath, rpath, **kw):
        real_put(lpath, rpath, **kw)
        print("put", rpath, flush=True)
        time.sleep(0.2)

    final.fs.put_file = put
    with store.atomic_output(final) as tmp:
        for i in range(30):
            (tmp / f"part-{i:02d}.bin").write_bytes(b"x" * 200_000)
            print("staged", i, flush=True)
            if sys.argv[2] == "stage" and i == 5:
                time.sleep(60)  # killed here, before any upload
    print("done", flush=True)
''')


def _write_until(line_prefix: str, count: int, mode: str, run_id: str) -> list[str]:
    """Start the writer, SIGKILL it after ``count`` lines starting with ``line_prefix``."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, run_id, mode], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[2], env=dict(os.environ))
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.strip())
            if sum(s.startswith(line_prefix) for s in seen) >= count:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, seen[-3:]
    return seen


@pytest.mark.parametrize(("mode", "prefix", "count"), [("stage", "staged", 6),
                                                        ("upload", "put", 3)])
def test_killed_writer_leaves_no_committed_output(s3, tmp_path, mode, prefix, count):
    run_id = f"killed-{mode}"
    seen = _write_until(prefix, count, mode, run_id)
    assert "done" not in seen
    final = storage.storage_root() / "digital_twins" / run_id
    key = final.path.split("/", 1)[1]
    objects = s3.keys(key + "/")
    assert f"{key}/{MANIFEST}" not in objects
    if mode == "stage":
        assert objects == []  # staged locally only: nothing reached the bucket
    else:
        assert 3 <= len(objects) < 30  # some objects, never the commit marker
        assert storage.to_path(f"{final}/part-00.bin").exists()  # the object is there ...
        assert not storage.exists(f"{final}/part-00.bin")  # ... but reads as absent
    assert not storage.is_committed(final)


STREAMER = textwrap.dedent('''
    import sys, time
    from types import SimpleNamespace
    import dagster as dg
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from e2i_pipelines.core.storage import E2IStorage

    store = E2IStorage()
    ctx = SimpleNamespace(asset_key=dg.AssetKey("digital_twins"),
                          run=SimpleNamespace(run_id=sys.argv[1]))
    schema = pa.schema([("x", pa.float64())])
    with store.atomic_output(store.output_dir(ctx)) as tmp, \\
            pq.ParquetWriter(str(tmp / "twins.parquet"), schema, compression="none") as writer:
        for i in range(200):  # 8 MB row groups, streamed to S3 while written
            writer.write_table(pa.table({"x": np.random.default_rng(i).normal(size=1_000_000)}))
            print("group", i, flush=True)
            time.sleep(0.2)
    print("done", flush=True)
''')


def test_killed_while_streaming_leaves_no_object(s3):
    """SIGKILL while a Parquet file's parts are being uploaded: the parts never become an
    object (the multipart upload is left incomplete, for the bucket's lifecycle rule)."""
    run_id = "killed-stream"
    final = storage.storage_root() / "digital_twins" / run_id
    key = final.path.split("/", 1)[1]
    client = s3.client()
    proc = subprocess.Popen([sys.executable, "-c", STREAMER, run_id], stdout=subprocess.DEVNULL,
                            cwd=Path(__file__).parents[2], env=dict(os.environ))
    parts = 0
    try:
        deadline = time.monotonic() + 120
        while parts < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            for upload in client.list_multipart_uploads(Bucket=s3.bucket,
                                                        Prefix=key).get("Uploads", []):
                parts = len(client.list_parts(Bucket=s3.bucket, Key=upload["Key"],
                                              UploadId=upload["UploadId"]).get("Parts", []))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert parts >= 2  # parts were up before the kill
    assert s3.keys(key) == []  # ... yet no object, and no manifest
    assert not storage.is_committed(final)
    assert not storage.exists(f"{final}/twins.parquet")
