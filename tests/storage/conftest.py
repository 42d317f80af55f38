"""A moto S3 server per test module of this area, env pointed at it per test."""

from collections.abc import Iterator

import pytest

from tests.support.s3 import S3Server, moto_server, use_s3


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch, tmp_path) -> S3Server:
    """Storage on the moto bucket; E2I_DATA_DIR (local staging) under tmp_path."""
    monkeypatch.setenv("E2I_DATA_DIR", str(tmp_path / "node"))
    use_s3(monkeypatch, s3_server, f"s3://{s3_server.bucket}/{tmp_path.name}")
    return s3_server
