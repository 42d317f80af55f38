"""A real S3 API on loopback for tests: moto's server, one fresh bucket, env pointing at it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.conftest import require

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class S3Server:
    """A running moto server (``endpoint``) with an empty ``bucket``; ``url`` is a storage URL."""

    endpoint: str
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/e2i"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """Start moto's server on 127.0.0.1 (random port), create a bucket; stop it afterwards."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        require(False, f"moto[server] ({exc})")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(endpoint=f"http://{host}:{port}", bucket=f"e2i-{uuid.uuid4().hex[:10]}")
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()


def use_s3(monkeypatch, s3: S3Server, url: str | None = None) -> str:
    """Point E2I_STORAGE_URL / the endpoint / credentials at ``s3`` for this test."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("E2I_S3_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("E2I_STORAGE_URL", url or s3.url)
    return url or s3.url
