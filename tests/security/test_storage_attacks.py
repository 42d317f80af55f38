"""E2I_STORAGE_URL and the S3 settings are configuration, never echoed: credentials or a query in
the URL, an unsupported scheme is refused with a message that names the problem and never the
credentials; a traversal-looking key stays under the root. Happy path: tests/storage/."""

from collections.abc import Iterator

import pytest

from e2i_pipelines.core import storage
from e2i_pipelines.core.storage import E2IStorage, StorageError
from tests.support.s3 import CREDENTIALS, S3Server, moto_server, use_s3

SECRET = CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.mark.parametrize("url", [f"s3://user:{SECRET}@bucket/x", f"s3://bucket/x?token={SECRET}",
                                 f"s3://{SECRET}@bucket/x"])
def test_credentials_in_the_url_are_refused_unechoed(monkeypatch, url):
    monkeypatch.setenv("E2I_STORAGE_URL", url)
    with pytest.raises(StorageError) as err:
        storage.check_storage()
    assert SECRET not in str(err.value) and "credentials" in str(err.value)


@pytest.mark.parametrize("url", ["ftp://host/x", "http://127.0.0.1/x", "file+ssh://h/x",
                                 "s3:///no-bucket", "python://os.system"])
def test_unsupported_urls_are_refused(monkeypatch, url):
    monkeypatch.setenv("E2I_STORAGE_URL", url)
    with pytest.raises(StorageError) as err:
        storage.storage_root()
    assert "unsupported scheme" in str(err.value) or "names no bucket" in str(err.value)


def test_wrong_secret_file_names_the_variable_not_the_path_content(monkeypatch, tmp_path):
    monkeypatch.setenv("E2I_STORAGE_URL", "s3://bucket/x")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError) as err:
        storage.storage_options()
    assert "AWS_SECRET_ACCESS_KEY_FILE" in str(err.value)


def test_asset_names_cannot_leave_the_storage_root(s3_server, monkeypatch, tmp_path):
    """Output keys come from asset keys and run ids (never from run parameters); a key with
    '..' stays a literal object name under the root."""
    use_s3(monkeypatch, s3_server, f"s3://{s3_server.bucket}/root")
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path))
    final = E2IStorage().root_path / ".." / "escape" / "run"
    with E2IStorage().atomic_output(final) as tmp:
        (tmp / "f.txt").write_text("x")
    written = s3_server.keys("")
    assert written and all(k.startswith("root/") for k in written), written
