"""Streaming uploads on a real S3 API (moto's server on loopback): the multipart writer and the
staging-folder streamer that sends Parquet row groups while an asset still writes them."""

import os
import threading
import time
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from e2i_pipelines.core import storage
from e2i_pipelines.core.storage import MANIFEST, E2IStorage
from e2i_pipelines.core.upload_stream import (
    FOLLOW_BYTES,
    UPLOAD_NICE,
    MultipartUpload,
    StagingStreamer,
    publish,
)

MIB = 1 << 20
PART = 5 * MIB  # S3's (and moto's) smallest part but the last


def _fs():
    return storage.storage_root().fs


def _path(s3, name: str) -> str:
    return f"{storage.storage_root().path}/{name}"


def _object(s3, path: str) -> bytes:
    bucket, key = path.split("/", 1)
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _pending_uploads(s3, prefix: str = "") -> list[dict]:
    return s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads", [])


def test_multipart_writer_uploads_equal_bytes(s3):
    data = np.random.default_rng(0).bytes(3 * PART + 123_457)
    path = _path(s3, "equal.bin")
    with MultipartUpload(_fs(), path, part_bytes=PART) as upload:
        for start in range(0, len(data), 1_000_003):  # writes that do not align with parts
            upload.write(data[start:start + 1_000_003])
    assert _object(s3, path) == data
    assert upload.size == len(data)
    assert _pending_uploads(s3) == []


def test_small_object_is_one_put(s3):
    path = _path(s3, "small.bin")
    with MultipartUpload(_fs(), path, part_bytes=PART) as upload:
        upload.write(b"abc")
    assert _object(s3, path) == b"abc"
    assert upload._upload_id is None


def test_exception_aborts_and_leaves_nothing(s3):
    path = _path(s3, "aborted.bin")
    with pytest.raises(RuntimeError, match="compute failed"), \
            MultipartUpload(_fs(), path, part_bytes=PART) as upload:
        upload.write(b"x" * (2 * PART + 10))
        assert upload._upload_id is not None  # parts were on their way
        raise RuntimeError("compute failed")
    key = path.split("/", 1)[1]
    assert s3.keys(key) == []
    assert _pending_uploads(s3, key) == []  # parts dropped with the upload
    with pytest.raises(ValueError, match="finished upload"):
        upload.write(b"more")


def test_buffers_stay_bounded_while_the_upload_lags(s3):
    """A writer far faster than the store holds at most 2 * in-flight + 2 parts."""
    fs = _fs()
    real_call = fs.call_s3
    slow_parts = []

    def slow(method, *args, **kwargs):
        if method == "upload_part":
            slow_parts.append(kwargs["PartNumber"])
            time.sleep(0.05)
        return real_call(method, *args, **kwargs)

    upload = MultipartUpload(fs, _path(s3, "bounded.bin"), part_bytes=PART, parts_in_flight=1)
    upload.fs = SimpleNamespace(call_s3=slow, invalidate_cache=fs.invalidate_cache)
    block = b"y" * MIB
    for _ in range(12 * PART // MIB):
        upload.write(block)
    upload.complete()
    assert len(slow_parts) == 12
    assert PART <= upload.peak_held <= (2 * 1 + 2) * PART
    assert len(_object(s3, upload.path)) == 12 * PART


def test_failed_part_stops_the_writer(s3):
    fs = _fs()
    real_call = fs.call_s3

    def failing(method, *args, **kwargs):
        if method == "upload_part" and kwargs["PartNumber"] == 2:
            raise ConnectionError("link dropped")
        return real_call(method, *args, **kwargs)

    upload = MultipartUpload(fs, _path(s3, "failing.bin"), part_bytes=PART)
    upload.fs = SimpleNamespace(call_s3=failing, invalidate_cache=fs.invalidate_cache)
    with pytest.raises(OSError, match="ConnectionError"), upload:
        for _ in range(40):
            upload.write(b"z" * PART)
            time.sleep(0.01)
    key = upload.path.split("/", 1)[1]
    assert s3.keys(key) == [] and _pending_uploads(s3, key) == []


def _context(run_id: str):
    return SimpleNamespace(asset_key=dg.AssetKey("digital_twins"),
                           run=SimpleNamespace(run_id=run_id))


def _write_parquet(path, groups: int, rows: int, during=None) -> None:
    """Row groups of random floats (about 8 MiB each at 1M rows), ``during`` after each."""
    rng = np.random.default_rng(1)
    schema = pa.schema([("x", pa.float64())])
    with pq.ParquetWriter(str(path), schema, compression="none") as writer:
        for _ in range(groups):
            writer.write_table(pa.table({"x": rng.normal(size=rows)}, schema=schema))
            if during is not None:
                during()


def test_atomic_output_streams_parts_before_commit(s3):
    """Parts of a growing Parquet file reach the store while the asset still writes; no object
    exists under the key until commit; then the object equals the staged file."""
    store = E2IStorage()
    final = store.output_dir(_context("streamed"))
    key = final.path.split("/", 1)[1]
    seen: list[int] = []

    def parts_so_far() -> None:
        uploads = _pending_uploads(s3, key)
        if uploads:
            parts = s3.client().list_parts(Bucket=s3.bucket, Key=uploads[0]["Key"],
                                           UploadId=uploads[0]["UploadId"]).get("Parts", [])
            seen.append(len(parts))
        assert s3.keys(key) == []  # nothing readable before commit
        time.sleep(0.3)

    with store.atomic_output(final) as tmp:
        _write_parquet(tmp / "twins.parquet", groups=8, rows=1_000_000, during=parts_so_far)
        staged = (tmp / "twins.parquet").read_bytes()
    assert len(staged) > FOLLOW_BYTES
    assert max(seen) >= 2, seen  # uploaded while writing, not after
    assert storage.is_committed(final)
    with storage.open_file(final / "twins.parquet") as handle:
        assert handle.read() == staged
    assert s3.keys(key) == sorted([f"{key}/{MANIFEST}", f"{key}/twins.parquet"])
    assert _pending_uploads(s3, key) == []
    assert storage.read_parquet(final / "twins.parquet")["x"].size == 8_000_000


def test_failed_asset_leaves_no_object_and_no_upload(s3):
    store = E2IStorage()
    final = store.output_dir(_context("failed-stream"))
    key = final.path.split("/", 1)[1]

    def wait_for_parts() -> None:
        time.sleep(0.3)

    with pytest.raises(RuntimeError, match="out of budget"), store.atomic_output(final) as tmp:
        _write_parquet(tmp / "twins.parquet", groups=4, rows=1_000_000, during=wait_for_parts)
        raise RuntimeError("out of budget")
    assert s3.keys(key) == []
    assert _pending_uploads(s3, key) == []
    assert not storage.is_committed(final)


def test_file_rewritten_after_streaming_is_uploaded_again(s3, tmp_path):
    """A staged file that is rewritten (not appended) is not committed from its stale parts."""
    folder = tmp_path / "stage"
    folder.mkdir()
    fs = _fs()
    base = _path(s3, "rewritten")
    first = b"a" * (3 * PART)
    second = b"b" * PART + b"c" * (2 * PART)
    with StagingStreamer(folder, fs, base, follow_bytes=PART, part_bytes=PART) as streamer:
        (folder / "out.bin").write_bytes(first)
        deadline = time.monotonic() + 20
        while streamer._followers.get("out.bin") is None or \
                streamer._followers["out.bin"].offset < len(first):
            assert time.monotonic() < deadline, "the file was not followed"
            time.sleep(0.05)
        with open(folder / "out.bin", "r+b") as handle:  # same size, other bytes
            handle.write(second)
        done = streamer.finish()
    assert done == set()  # not committed from the stream ...
    key = base.split("/", 1)[1]
    assert s3.keys(key) == [] and _pending_uploads(s3, key) == []  # ... and its parts dropped


def test_streamer_commits_files_in_subfolders(s3, tmp_path):
    folder = tmp_path / "stage"
    (folder / "sub").mkdir(parents=True)
    data = os.urandom(2 * PART + 17)
    base = _path(s3, "nested")
    with StagingStreamer(folder, _fs(), base, follow_bytes=PART, part_bytes=PART) as streamer:
        writer = threading.Thread(target=(folder / "sub" / "big.bin").write_bytes, args=(data,))
        writer.start()
        writer.join()
        time.sleep(0.5)
        (folder / "small.txt").write_text("s")
        done = streamer.finish()
    assert done == {"sub/big.bin"}  # the small file is left to the ordinary upload
    assert _object(s3, f"{base}/sub/big.bin") == data



def _hidden_then_publish(folder, name: str, data: bytes) -> None:
    tmp = folder / f".{name}"
    tmp.write_bytes(data)
    publish(tmp, folder / name)


def test_published_files_go_up_whole_and_hidden_files_are_never_followed(s3, tmp_path):
    """Parts of a Parquet dataset: written under a hidden name (never followed, however large),
    then published, each one PUT at once; no multipart upload is left to complete at commit."""
    folder = tmp_path / "stage"
    (folder / "twins.parquet").mkdir(parents=True)
    base = _path(s3, "published")
    key = base.split("/", 1)[1]
    parts = [os.urandom(2 * PART + i) for i in range(3)]
    with StagingStreamer(folder, _fs(), base, follow_bytes=PART, part_bytes=PART) as streamer:
        (folder / "twins.parquet" / ".part-00009.parquet").write_bytes(os.urandom(3 * PART))
        for i, data in enumerate(parts):
            _hidden_then_publish(folder / "twins.parquet", f"part-{i:05d}.parquet", data)
        deadline = time.monotonic() + 30
        while len(s3.keys(key)) < 3:  # up before the commit
            assert time.monotonic() < deadline, s3.keys(key)
            time.sleep(0.05)
        assert streamer._followers == {}  # neither the published nor the hidden file
        assert _pending_uploads(s3, key) == []
        done = streamer.finish()
    assert done == {f"twins.parquet/part-{i:05d}.parquet" for i in range(3)}
    for i, data in enumerate(parts):
        assert _object(s3, f"{base}/twins.parquet/part-{i:05d}.parquet") == data
    assert s3.keys(key) == [f"{key}/twins.parquet/part-{i:05d}.parquet" for i in range(3)]


def test_publish_outside_a_streamer_is_a_rename(tmp_path):
    (tmp_path / ".part.bin").write_bytes(b"x")
    publish(tmp_path / ".part.bin", tmp_path / "part.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["part.bin"]
    (tmp_path / "visible.bin").write_bytes(b"y")
    with pytest.raises(ValueError, match="hidden name"):  # a visible file may be followed
        publish(tmp_path / "visible.bin", tmp_path / "other.bin")


def test_failed_asset_removes_the_parts_it_published(s3):
    store = E2IStorage()
    final = store.output_dir(_context("failed-parts"))
    key = final.path.split("/", 1)[1]
    with pytest.raises(RuntimeError, match="out of budget"), store.atomic_output(final) as tmp:
        (tmp / "twins.parquet").mkdir()
        _hidden_then_publish(tmp / "twins.parquet", "part-00000.parquet", os.urandom(PART))
        deadline = time.monotonic() + 30
        while not s3.keys(key):  # the part is up ...
            assert time.monotonic() < deadline
            time.sleep(0.05)
        raise RuntimeError("out of budget")
    assert s3.keys(key) == []  # ... and removed with the failed output
    assert not storage.is_committed(final)


def test_committed_dataset_folder_reads_as_one_table(s3):
    store = E2IStorage()
    final = store.output_dir(_context("dataset-folder"))
    frames = [pd.DataFrame({"x": np.arange(i * 1_000, (i + 1) * 1_000, dtype=float)})
              for i in range(3)]
    with store.atomic_output(final) as tmp:
        (tmp / "twins.parquet").mkdir()
        for i, frame in enumerate(frames):
            frame.to_parquet(tmp / "twins.parquet" / f".part-{i}.parquet")
            publish(tmp / "twins.parquet" / f".part-{i}.parquet",
                    tmp / "twins.parquet" / f"part-{i}.parquet")
        (tmp / "empty.parquet").mkdir()
        (tmp / "empty.parquet" / "_SUCCESS").write_text("")
    files = storage.parquet_files(final / "twins.parquet")
    assert sum(f.metadata.num_rows for f in files) == 3_000
    pd.testing.assert_frame_equal(storage.read_parquet(final / "twins.parquet"),
                                  pd.concat(frames, ignore_index=True))
    with pytest.raises(FileNotFoundError, match="holds no Parquet files"):
        storage.parquet_files(final / "empty.parquet")


def test_streamer_threads_run_at_a_lower_priority(s3, tmp_path):
    """The uploads' loop, poller and PUT threads yield the cores to the asset's own threads;
    the caller's thread keeps its priority."""
    folder = tmp_path / "stage"
    folder.mkdir()
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    names = {"e2i-upload-loop", "e2i-stage-stream", "e2i-put-0", "e2i-put-1"}
    with StagingStreamer(folder, _fs(), _path(s3, "nice"), follow_bytes=PART,
                         part_bytes=PART) as streamer:
        _hidden_then_publish(folder, "a.bin", b"x" * 10)
        deadline = time.monotonic() + 10
        while True:
            threads = {t.name: t.native_id for t in threading.enumerate() if t.name in names}
            nice = {name: os.getpriority(os.PRIO_PROCESS, tid) for name, tid in threads.items()}
            if set(nice) == names and set(nice.values()) == {UPLOAD_NICE}:
                break
            assert time.monotonic() < deadline, nice
            time.sleep(0.05)
        assert streamer.finish() == {"a.bin"}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller != UPLOAD_NICE
    assert not any(t.name in names for t in threading.enumerate())  # all stopped
