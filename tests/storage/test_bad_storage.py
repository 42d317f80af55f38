"""A misconfigured or unreachable bucket: a clear error at run start, naming the URL only."""

import socket

import dagster as dg
import pytest

from e2i_pipelines.core import storage
from e2i_pipelines.core.storage import E2IStorage, StorageError, StorageIOManager
from tests.support.s3 import CREDENTIALS, use_s3

SECRET = CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _messages(error) -> str:
    """The message of a Dagster SerializableErrorInfo and of its causes."""
    out = []
    while error is not None:
        out.append(error.message)
        error = error.cause
    return " ".join(out)


def _assert_clean(message: str) -> None:
    assert SECRET not in message and "testing-key" not in message
    assert "127.0.0.1" not in message  # the endpoint (an internal URL) is not echoed


def test_missing_bucket_named_without_credentials(s3, monkeypatch):
    url = use_s3(monkeypatch, s3, "s3://no-such-bucket-e2i/prefix")
    with pytest.raises(StorageError) as err:
        storage.check_storage()
    assert "s3://no-such-bucket-e2i/prefix" in str(err.value)
    assert "does not exist" in str(err.value)
    _assert_clean(str(err.value))
    assert url in str(err.value)


def test_unreachable_endpoint(monkeypatch, s3):
    use_s3(monkeypatch, s3)
    monkeypatch.setenv("E2I_S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(StorageError) as err:
        storage.check_storage()
    assert s3.url.split("/")[2] in str(err.value) and "unreachable" in str(err.value)
    _assert_clean(str(err.value))


def test_credentials_in_the_url_are_not_echoed(s3, monkeypatch):
    use_s3(monkeypatch, s3, f"s3://user:{SECRET}@no-such-bucket-e2i/x?token={SECRET}")
    with pytest.raises(StorageError) as err:
        storage.check_storage()
    _assert_clean(str(err.value))


@pytest.mark.parametrize("url", ["ftp://host/x", "s3:///nobucket", "http://127.0.0.1/x"])
def test_unusable_urls(monkeypatch, url):
    monkeypatch.setenv("E2I_STORAGE_URL", url)
    with pytest.raises(StorageError):
        storage.storage_root()


def test_run_fails_at_start_before_the_asset_body(s3, monkeypatch):
    use_s3(monkeypatch, s3, "s3://no-such-bucket-e2i/run")
    ran = []

    @dg.asset
    def heavy(storage: E2IStorage) -> int:
        ran.append(1)
        return 1

    result = dg.materialize([heavy], resources={"storage": E2IStorage(),
                                                "io_manager": StorageIOManager()},
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success and ran == []
    failures = [e for e in result.all_events if e.is_failure]
    text = " ".join(_messages(e.event_specific_data.error) for e in failures
                    if e.event_specific_data and getattr(e.event_specific_data, "error", None))
    assert "s3://no-such-bucket-e2i/run" in text and "does not exist" in text
    _assert_clean(text)
