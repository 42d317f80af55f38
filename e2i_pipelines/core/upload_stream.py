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

A writer that produces a file in one go (a finished part of a Parquet dataset) writes it under a
hidden name and hands it over with :func:`publish`: the streamer of its folder uploads it whole
at once, with a single PUT up to :data:`SINGLE_PUT_BYTES`. Such an object needs no multipart
completion at commit, and files whose name starts with ``.`` are never followed.

The streamer's uploads run on an event loop and threads of their own at a lower CPU priority
(:data:`UPLOAD_NICE`): the asset's own work keeps the cores, the uploads take the time it
leaves idle (the file waits on local disk meanwhile, not in memory). At commit the rest goes at
the caller's priority.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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
SINGLE_PUT_BYTES = 32 << 20
"""Published files up to this size go up in one PUT; larger ones as multipart uploads."""

UPLOAD_NICE = 19
"""Niceness of the streamer's threads (a thread may always lower its own priority)."""

_ACTIVE: dict[Path, StagingStreamer] = {}
_ACTIVE_LOCK = threading.Lock()


def publish(tmp: Path, final: Path) -> None:
    """Move the finished file ``tmp`` to ``final`` (same folder tree, ``os.replace``). When a
    :class:`StagingStreamer` follows that folder, it uploads ``final`` whole at once instead of
    following it; elsewhere (local storage) this is only the rename."""
    if not tmp.name.startswith("."):
        raise ValueError(f"publish: {tmp.name!r} must be a hidden name (a file being written)")
    streamer = _streamer_of(final)
    if streamer is None:
        os.replace(tmp, final)
        return
    streamer.claim(final)  # before the rename: the poller must never follow it
    os.replace(tmp, final)
    streamer.send_whole(final)


def lower_priority() -> None:
    """Run the calling thread at :data:`UPLOAD_NICE` (Linux: niceness is per thread)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UPLOAD_NICE)


class BackgroundFs:
    """A copy of the s3fs filesystem ``fs`` whose requests run on an event loop in a thread of
    its own at :data:`UPLOAD_NICE` (signing, checksums and sends off the asset's cores)."""

    def __init__(self, fs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="e2i-upload-loop")
        self._thread.start()
        options = dict(fs.storage_options)
        if getattr(fs, "session", None) is not None:  # its service models already loaded
            options.setdefault("session", fs.session)
        self.fs = type(fs)(**options, loop=self.loop, skip_instance_cache=True)

    def _run(self) -> None:
        lower_priority()
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def close(self) -> None:
        """Close the HTTP session and stop the loop (idempotent)."""
        if not self._thread.is_alive():
            return
        client = getattr(self.fs, "_s3", None)
        if client is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(
                    client.__aexit__(None, None, None), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


def _streamer_of(path: Path) -> StagingStreamer | None:
    with _ACTIVE_LOCK:
        for folder, streamer in _ACTIVE.items():
            if path.is_relative_to(folder):
                return streamer
    return None


def streams_to(fs: Any) -> bool:
    """True when ``fs`` is an S3 filesystem (s3fs), the one store with multipart streaming."""
    return "s3" in getattr(fs, "protocol", ()) and hasattr(fs, "call_s3")


def put_file(local: Path, fs: Any, path: str, parts_in_flight: int = PARTS_IN_FLIGHT,
             part_bytes: int = PART_BYTES) -> None:
    """Upload ``local`` to ``path`` on ``fs`` in ``part_bytes`` parts (s3fs's default of
    50 MiB x 10 in flight held up to 500 MiB of a run's memory), at most ``parts_in_flight`` in
    memory at once (s3; other stores: their defaults)."""
    if streams_to(fs):
        fs.put_file(str(local), path, chunksize=part_bytes, max_concurrency=parts_in_flight)
    else:
        fs.put_file(str(local), path)


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
        # Published files (see publish): uploaded whole by their own threads.
        self._claimed: set[str] = set()
        self._whole: queue.Queue[str | None] = queue.Queue()
        self._whole_threads: list[threading.Thread] = []
        self._whole_sent: set[str] = set()
        self._whole_lock = threading.Lock()
        self._background: BackgroundFs | None = None
        self._ufs: Any = fs  # the uploads' filesystem (its own loop once entered)

    def __enter__(self) -> StagingStreamer:
        self._background = BackgroundFs(self.fs)
        self._ufs = self._background.fs
        with _ACTIVE_LOCK:
            _ACTIVE[self.folder] = self
        self._thread.start()
        return self

    def claim(self, path: Path) -> None:
        """``path`` (not yet there) will be published whole: the poller must not follow it."""
        with self._whole_lock:
            self._claimed.add(path.relative_to(self.folder).as_posix())

    def send_whole(self, path: Path) -> None:
        """Upload the finished file ``path`` in the background (one PUT when small enough)."""
        with self._whole_lock:
            if not self._whole_threads:
                self._whole_threads = [threading.Thread(target=self._whole_worker, daemon=True,
                                                        name=f"e2i-put-{i}")
                                       for i in range(self.parts_in_flight)]
                for thread in self._whole_threads:
                    thread.start()
        self._whole.put(path.relative_to(self.folder).as_posix())

    def _whole_worker(self) -> None:
        lower_priority()
        while (rel := self._whole.get()) is not None:
            if self._cancel.is_set():
                continue
            local, key = self.folder / rel, f"{self.base}/{rel}"
            try:
                if local.stat().st_size <= SINGLE_PUT_BYTES:
                    bucket, name, _ = self._ufs.split_path(key)
                    with open(local, "rb") as body:  # streamed from disk, not held in memory
                        self._ufs.call_s3("put_object", Bucket=bucket, Key=name, Body=body)
                else:
                    put_file(local, self._ufs, key, parts_in_flight=1,
                             part_bytes=self.part_bytes)
                self.fs.invalidate_cache(key)  # the readers' listings must see the object
            except Exception:  # noqa: BLE001 - left to the ordinary upload at commit
                continue
            with self._whole_lock:
                self._whole_sent.add(rel)

    def _stop_whole(self) -> None:
        for _ in self._whole_threads:
            self._whole.put(None)
        for thread in self._whole_threads:
            thread.join()
        self._whole_threads = []

    def _unregister(self) -> None:
        with _ACTIVE_LOCK:
            if _ACTIVE.get(self.folder) is self:
                del _ACTIVE[self.folder]
        if self._background is not None:
            self._background.close()
        self.fs.invalidate_cache(self.base)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _run(self) -> None:
        lower_priority()
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
            if rel in self._failed or rel in self._claimed or "/." in f"/{rel}":
                continue  # failed, published whole, or hidden (still being written)
            try:
                follower = self._followers.get(rel)
                if follower is None:
                    if not path.is_file() or path.stat().st_size < self.follow_bytes:
                        continue
                    follower = self._followers[rel] = _Follower(path, MultipartUpload(
                        self._ufs, f"{self.base}/{rel}", self.part_bytes, self.parts_in_flight))
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
        # The asset now waits on the uploads: what is still to send goes through the caller's
        # filesystem at the caller's priority (a thread cannot raise its own back without
        # CAP_SYS_NICE); requests already in flight finish on the background loop.
        self._ufs = self.fs
        for follower in self._followers.values():
            follower.upload.fs = self.fs  # an upload id is good from any client
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
        self._stop_whole()
        self._unregister()
        sent, self._whole_sent = self._whole_sent, set()  # the commit owns them from here
        return done | {rel for rel in sent if (self.folder / rel).is_file()}

    def abort(self) -> None:
        """Stop and abort every upload: nothing appears under ``base``."""
        self._cancel.set()  # the backlog is not sent first
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for rel in list(self._followers):
            self._drop(rel)
        self._stop_whole()
        for rel in sorted(self._whole_sent):  # whole objects already up: not left behind
            with contextlib.suppress(Exception):
                self._ufs.rm_file(f"{self.base}/{rel}")
        self._whole_sent.clear()
        self._unregister()

