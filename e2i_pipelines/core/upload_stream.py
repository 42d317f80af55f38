"""Uploads that run beside the writer: S3 multipart uploads fed while a file is still growing.

:class:`MultipartUpload` is a write-only stream to one S3 object. Full parts go to a bounded
queue, and background threads upload them, so the writer blocks only when ``parts_in_flight``
parts are already waiting. :meth:`MultipartUpload.complete` makes the object appear (S3's
CompleteMultipartUpload); :meth:`~MultipartUpload.abort` or an exception inside ``with`` leaves
no object under the key. Memory: at most ``2 * parts_in_flight + 2`` parts at once (the
queue, the parts being sent, the one waiting for the queue and the partial one).

:class:`StagingStreamer` follows the large files of a staging folder while the asset writes them
(Parquet row groups are appended, never rewritten) and feeds each one to a
:class:`MultipartUpload`, so the upload overlaps the compute instead of following it. At commit
it reads each file's tail and checks that the bytes it sent are still the file's bytes (CRC per
part); a file that changed is aborted and left to the ordinary upload.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import zlib
from pathlib import Path
from typing import Any

PART_BYTES = 8 << 20
"""Part size (S3's minimum is 5 MiB, except the last part)."""
PARTS_IN_FLIGHT = 2
FOLLOW_BYTES = 2 * PART_BYTES
"""Files of the staging folder from this size on are streamed while they grow."""
POLL_SECONDS = 0.2


def streams_to(fs: Any) -> bool:
    """True when ``fs`` is an S3 filesystem (s3fs), the one store with multipart streaming."""
    return "s3" in getattr(fs, "protocol", ()) and hasattr(fs, "call_s3")


class MultipartUpload:
    """A write-only stream to ``path`` on the s3fs filesystem ``fs`` (see the module doc)."""

    def __init__(self, fs: Any, path: str, part_bytes: int = PART_BYTES,
                 parts_in_flight: int = PARTS_IN_FLIGHT) -> None:
        self.fs, self.path = fs, path
        self.bucket, self.key, _ = fs.split_path(path)
        self.part_bytes = part_bytes
        self.size = 0
        self.peak_held = 0  # most bytes held at once (buffer + queued + uploading), for tests
        self._buffer = bytearray()
        self._queue: queue.Queue = queue.Queue(maxsize=parts_in_flight)
        self._etags: dict[int, str] = {}
        self._upload_id: str | None = None
        self._held = 0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._parts = 0
        self._parts_in_flight = parts_in_flight
        self._done = False

    def __enter__(self) -> MultipartUpload:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.complete()
        else:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer ``data``; every full part goes to the upload queue (blocks while it is full)."""
        if self._done:
            raise ValueError(f"write to a finished upload of {self.path!r}")
        self._raise_failed()
        self._hold(len(data))
        self.size += len(data)
        view = memoryview(data).cast("B")
        if self._buffer:  # top up the partial part first
            take = min(len(view), self.part_bytes - len(self._buffer))
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == self.part_bytes:
                part, self._buffer = bytes(self._buffer), bytearray()
                self._send(part)
        while len(view) >= self.part_bytes:  # whole parts straight from the caller's bytes
            self._send(bytes(view[:self.part_bytes]))
            view = view[self.part_bytes:]
        self._buffer += view
        return len(data)

    def complete(self) -> None:
        """Upload the rest as the last part and commit: the object exists from here on."""
        if self._done:
            return
        try:
            if self._upload_id is None:  # smaller than one part: a single PUT
                self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key,
                                Body=bytes(self._buffer))
            else:
                if self._buffer:
                    self._send(bytes(self._buffer))
                self._drain()
                parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
                self.fs.call_s3("complete_multipart_upload", Bucket=self.bucket, Key=self.key,
                                UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort()
            raise
        self._buffer = bytearray()
        self._done = True
        self.fs.invalidate_cache(self.path)

    def abort(self) -> None:
        """Stop and drop the upload: no object is created under the key (idempotent)."""
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        self._error = self._error or RuntimeError("aborted")
        self._drain(raise_error=False)
        if self._upload_id is not None:
            with contextlib.suppress(Exception):  # never completed, so still no object
                self.fs.call_s3("abort_multipart_upload", Bucket=self.bucket, Key=self.key,
                                UploadId=self._upload_id)

    def _send(self, part: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self.fs.call_s3("create_multipart_upload", Bucket=self.bucket,
                                              Key=self.key)["UploadId"]
            self._threads = [threading.Thread(target=self._worker, daemon=True,
                                              name=f"e2i-upload-{i}")
                             for i in range(self._parts_in_flight)]
            for thread in self._threads:
                thread.start()
        self._parts += 1
        while True:  # put with a timeout: a failed worker must not leave the writer blocked
            self._raise_failed()
            try:
                self._queue.put((self._parts, part), timeout=0.5)
                return
            except queue.Full:
                continue

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            number, part = item
            try:
                if self._error is None:
                    reply = self.fs.call_s3("upload_part", Bucket=self.bucket, Key=self.key,
                                            UploadId=self._upload_id, PartNumber=number,
                                            Body=part)
                    with self._lock:
                        self._etags[number] = reply["ETag"]
            except BaseException as exc:  # noqa: BLE001 - handed to the writer
                self._error = self._error or exc
            finally:
                self._hold(-len(part))

    def _drain(self, raise_error: bool = True) -> None:
        """Stop the workers after the queued parts (skipped once an error is set)."""
        for _ in self._threads:
            while True:
                try:
                    self._queue.put(None, timeout=0.5)
                    break
                except queue.Full:
                    if not any(t.is_alive() for t in self._threads):
                        break
        for thread in self._threads:
            thread.join()
        self._threads = []
        if raise_error:
            self._raise_failed()

    def _hold(self, delta: int) -> None:
        with self._lock:
            self._held += delta
            self.peak_held = max(self.peak_held, self._held)

    def _raise_failed(self) -> None:
        if self._error is not None:
            raise OSError(f"upload to {self.path!r} failed: {type(self._error).__name__}")


class _Follower:
    """One growing local file and its upload: the offset sent so far and a CRC per part."""

    def __init__(self, local: Path, upload: MultipartUpload) -> None:
        self.local, self.upload = local, upload
        self.offset = 0
        self.crcs: list[tuple[int, int]] = []  # (length, crc32) of each block sent

    def pump(self, to_end: bool = False, cancelled: threading.Event | None = None) -> bool:
        """Send the whole parts now in the file (everything when ``to_end``) until
        ``cancelled`` is set; True if any."""
        size = self.local.stat().st_size
        if size < self.offset:
            raise ValueError(f"{self.local.name} shrank while it was streamed")
        step = self.upload.part_bytes
        sent = False
        with open(self.local, "rb") as handle:
            handle.seek(self.offset)
            while size - self.offset >= step or (to_end and size > self.offset):
                if cancelled is not None and cancelled.is_set():
                    break
                block = handle.read(min(step, size - self.offset))
                if not block:
                    break
                self.upload.write(block)
                self.crcs.append((len(block), zlib.crc32(block)))
                self.offset += len(block)
                sent = True
        return sent

    def unchanged(self) -> bool:
        """True when the file still starts with the bytes sent (and has no more)."""
        if self.local.stat().st_size != self.offset:
            return False
        with open(self.local, "rb") as handle:
            return all(zlib.crc32(handle.read(length)) == crc for length, crc in self.crcs)


class StagingStreamer:
    """Streams the large files of ``folder`` to ``<base>/<relative path>`` on ``fs`` while
    they are written (a background thread polls the folder); :meth:`finish` commits them."""

    def __init__(self, folder: Path, fs: Any, base: str, follow_bytes: int = FOLLOW_BYTES,
                 part_bytes: int = PART_BYTES, parts_in_flight: int = PARTS_IN_FLIGHT) -> None:
        self.folder, self.fs, self.base = folder, fs, base.rstrip("/")
        self.follow_bytes, self.part_bytes = follow_bytes, part_bytes
        self.parts_in_flight = parts_in_flight
        self._followers: dict[str, _Follower] = {}
        self._failed: set[str] = set()
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="e2i-stage-stream")

    def __enter__(self) -> StagingStreamer:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._poll():
                self._stop.wait(POLL_SECONDS)

    def _poll(self) -> bool:
        """Start following new large files and send their new whole parts; True if any sent."""
        sent = False
        for path in sorted(self.folder.rglob("*")):
            if self._stop.is_set():
                break
            rel = path.relative_to(self.folder).as_posix()
            if rel in self._failed:
                continue
            try:
                follower = self._followers.get(rel)
                if follower is None:
                    if not path.is_file() or path.stat().st_size < self.follow_bytes:
                        continue
                    follower = self._followers[rel] = _Follower(path, MultipartUpload(
                        self.fs, f"{self.base}/{rel}", self.part_bytes, self.parts_in_flight))
                sent = follower.pump(cancelled=self._cancel) or sent
            except (OSError, ValueError):  # gone, shrank or upload failed: plain upload later
                self._drop(rel)
        return sent

    def _drop(self, rel: str) -> None:
        self._failed.add(rel)
        follower = self._followers.pop(rel, None)
        if follower is not None:
            follower.upload.abort()

    def finish(self) -> set[str]:
        """Stop following, send each file's tail, commit the unchanged ones; their relative
        paths (the others are aborted: upload them the ordinary way)."""
        self._stop.set()
        self._thread.join()
        done: set[str] = set()
        for rel, follower in list(self._followers.items()):
            try:
                follower.pump(to_end=True)
                if not follower.unchanged():
                    raise ValueError(f"{rel} changed while it was streamed")
                follower.upload.complete()
                done.add(rel)
            except (OSError, ValueError):
                self._drop(rel)
        self._followers.clear()
        return done

    def abort(self) -> None:
        """Stop and abort every upload: nothing appears under ``base``."""
        self._cancel.set()  # the backlog is not sent first
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for rel in list(self._followers):
            self._drop(rel)

