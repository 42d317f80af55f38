"""Bad uploads and other clients' datasets through the API: every one is a clear 4xx that names the
problem (row and column where one applies), quotes no file content, and leaves nothing stored.

Uploads go through the app in-process (no Dagster needed: nothing launches); the size cap and the
memory bound are checked on the real API process (``python -m e2i_api``), whose RSS must not
grow with the body.
"""

from __future__ import annotations

import io
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from e2i_api.main import create_app
from e2i_pipelines.core.datasets import dataset_id
from tests.api.api_processes import ApiProcess, api_env
from tests.api.conftest import api_settings
from tests.api.test_datasets import storage_env
from tests.support.dagster_processes import free_port

ACME = {"X-API-Key": secrets.token_urlsafe(48)}
BETA = {"X-API-Key": secrets.token_urlsafe(48)}
ACME_READ = {"X-API-Key": secrets.token_urlsafe(48)}
ADMIN = {"X-API-Key": secrets.token_urlsafe(48)}
KEYS = [{"name": "acme", "key": ACME["X-API-Key"], "scopes": ["runs:read", "runs:write"]},
        {"name": "beta", "key": BETA["X-API-Key"], "scopes": ["runs:read", "runs:write"]},
        {"name": "acme", "key": ACME_READ["X-API-Key"], "scopes": ["runs:read"]},
        {"name": "ops", "key": ADMIN["X-API-Key"], "scopes": ["runs:read", "runs:write", "admin"]}]
CANARY = "canary_5be1_do_not_echo"
CAP = 16 << 20
GOOD = b"t,y,w\n1,2.5,3\n0,1.5,4\n1,0.5,5\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("dataset_attacks")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in storage_env(base, CAP).items():
            patch.setenv(key, value)
        yield base


@pytest.fixture(scope="module")
def api(base: Path) -> Iterator[TestClient]:
    """The API with nothing listening on its Dagster port: uploads and reads need no Dagster."""
    with TestClient(create_app(api_settings(free_port(), api_keys=KEYS, dagster_timeout_seconds=2))) as client:
        yield client


def _post(api: TestClient, body: bytes, name: str = "attack", headers: dict = ACME,
          content_type: str = "text/csv"):
    return api.post("/v1/datasets", params={"name": name}, content=body,
                    headers={**headers, "Content-Type": content_type})


def _stored(base: Path) -> list[str]:
    """Every file under the storage root and the staging folder (manifests, Parquet, uploads)."""
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def _parquet() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"t": list(range(5000)), "y": [float(i) for i in range(5000)]}), buffer)
    return buffer.getvalue()


def _mixed_late() -> bytes:
    """600k numeric rows (two 4 MiB pyarrow blocks), then a word in column y at row 500 001."""
    rows = [f"{i % 2},{i * 0.25},{i % 9}" for i in range(600_000)]
    rows[500_000] = f"1,{CANARY},2"
    return ("t,y,w\n" + "\n".join(rows) + "\n").encode()


BAD = {
    "empty": (b"", "the upload is empty (0 bytes)"),
    "header_only": (b"t,y,w\n", "header but no data rows"),
    "header_only_blank_lines": (b"t,y,w\n\n\n", "header but no data rows"),
    "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + CANARY.encode(), "neither Parquet nor"),
    "latin1": (f"t,y,name\n1,2,ok\n0,3,caf\xe9 {CANARY}\n".encode("latin-1"), "invalid UTF-8 on line 3"),
    "truncated_parquet": (_parquet()[:400], "not valid Parquet"),
    "parquet_cut_footer": (_parquet()[:-9], "not valid Parquet"),
    "parquet_magic_only": (b"PAR1" + CANARY.encode(), "not valid Parquet"),
    "duplicate_columns": (b"t,y,t\n1,2,3\n", "duplicate column name 't' (columns 1 and 3)"),
    "empty_column_name": (b"t,,y\n1,2,3\n", "column 2 of the header has an empty name"),
    "one_column": (b"t y w\n1 2 3\n", "the CSV header has one column"),
    "mixed_types": (f"t,y\n1,2\n0,{CANARY}\n".encode(), "column 'y', row 2: not a number"),
    "mixed_types_late_block": (_mixed_late(), "column 'y', row 500001: not a number"),
    "ragged_row": (b"t,y,w\n1,2,3\n0,1\n1,2,3\n", "row 2 has 2 fields, the header has 3"),
    "nul_bytes": (b"t,y\n1,2\x00\x00\n", "binary NUL byte on line 2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_upload_is_a_422_naming_the_problem_and_stores_nothing(api: TestClient, base: Path,
                                                                      case: str) -> None:
    before = _stored(base)
    body, expected = BAD[case]
    response = _post(api, body, name=f"bad_{case}", content_type="application/octet-stream")
    assert response.status_code == 422, response.text
    assert expected in response.text, response.text
    assert CANARY not in response.text and "Traceback" not in response.text
    assert str(base) not in response.text
    assert _stored(base) == before, "a failed upload left files behind"
    assert api.get(f"/v1/datasets/{dataset_id('acme', f'bad_{case}')}", headers=ACME).status_code == 404


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "x\\y", ".hidden", "", "a" * 129,
                                  "name\x00nul", "%2e%2e", "é"])
def test_path_traversal_and_odd_names_are_refused(api: TestClient, base: Path, name: str) -> None:
    before = _stored(base)
    response = _post(api, GOOD, name=name)
    assert response.status_code == 422, response.text
    assert "name" in response.text
    assert _stored(base) == before
    multipart = api.post("/v1/datasets", files={"file": (f"../{name}.csv", GOOD, "text/csv")},
                         data={"name": name}, headers=ACME)
    assert multipart.status_code == 422
    assert not list(base.parent.glob("escape*")) and _stored(base) == before


def test_multipart_takes_the_name_from_the_query_or_the_form(api: TestClient) -> None:
    by_query = api.post("/v1/datasets", params={"name": "mp_query"}, headers=ACME,
                        files={"file": ("whatever.csv", GOOD, "text/csv")})
    assert by_query.status_code == 201 and by_query.json()["rows"] == 3, by_query.text
    by_form = api.post("/v1/datasets", data={"name": "mp_form"}, headers=ACME,
                       files={"file": ("whatever.csv", GOOD, "text/csv")})
    assert by_form.status_code == 201 and by_form.json()["name"] == "mp_form"
    unnamed = api.post("/v1/datasets", headers=ACME, files={"file": ("x.csv", GOOD, "text/csv")})
    assert unnamed.status_code == 422 and "name" in unnamed.text
    no_file = api.post("/v1/datasets", data={"name": "mp_none"}, headers=ACME,
                       files={"other": ("x.csv", GOOD, "text/csv")})
    assert no_file.status_code == 422 and "'file' part" in no_file.text


def test_not_csv_or_parquet_content_types_are_refused(api: TestClient) -> None:
    for content_type in ("application/xml", "text/html", "image/png", ""):  # JSON: a Postgres import
        response = _post(api, GOOD, content_type=content_type)
        assert response.status_code == 415, response.text
    declared = _post(api, GOOD, content_type="application/vnd.apache.parquet")
    assert declared.status_code == 422 and "not Parquet" in declared.text
    assert _post(api, _parquet(), content_type="text/csv").status_code == 422


def test_over_the_cap_is_413(api: TestClient, base: Path) -> None:
    before = _stored(base)
    big = b"t,y\n" + b"1,2\n" * (CAP // 4 + 1)
    assert _post(api, big).status_code == 413  # declared Content-Length

    def chunks() -> Iterator[bytes]:
        yield b"t,y\n"
        for _ in range(CAP // 4096 + 2):
            yield b"1,2\n" * 1024

    assert _post(api, chunks()).status_code == 413  # chunked, counted as it streams
    assert _stored(base) == before


def test_other_clients_and_unknown_ids_are_404(api: TestClient) -> None:
    mine = _post(api, GOOD, name="acme_only")
    assert mine.status_code == 201, mine.text
    ident = mine.json()["id"]
    for method in ("get", "delete"):
        assert getattr(api, method)(f"/v1/datasets/{ident}", headers=BETA).status_code == 404
        assert getattr(api, method)(f"/v1/datasets/ds_{'0' * 24}", headers=ACME).status_code == 404
        assert getattr(api, method)("/v1/datasets/ds_..%2F..%2Fetc", headers=ACME).status_code in (404, 422)
    assert ident not in api.get("/v1/datasets", headers=BETA).text
    assert ident in api.get("/v1/datasets", headers=ADMIN).text
    assert api.delete(f"/v1/datasets/{ident}", headers=ACME_READ).status_code == 403
    assert _post(api, GOOD, headers=ACME_READ).status_code == 403
    # A run naming another client's id is refused before anything launches (422 naming the key).
    params = {"dataset": {"id": ident, "treatment": "t", "outcome": "y", "common_causes": ["w"]}}
    refused = api.post("/v1/runs", json={"job": "causal_job", "params": params}, headers=BETA)
    assert refused.status_code == 422 and "dataset.id: no dataset" in refused.text, refused.text
    bad_version = {"dataset": {**params["dataset"], "version": "../../etc/passwd"}}
    response = api.post("/v1/runs", json={"job": "causal_job", "params": bad_version}, headers=ACME)
    assert response.status_code == 422 and "dataset.version must be 64 hex digits" in response.text


def test_a_client_may_not_name_a_server_path(api: TestClient) -> None:
    params = {"dataset": {"source": "file", "path": "data.csv", "treatment": "t", "outcome": "y"}}
    response = api.post("/v1/runs", json={"job": "causal_job", "params": params}, headers=ACME)
    assert response.status_code == 422
    assert "dataset.path (a file on the server) is accepted only from admin keys" in response.text


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def _stream(port: int, key: str, total: int, chunk: int = 1 << 16) -> str:
    """POST ``total`` bytes of CSV as a chunked body over a raw socket, stopping when the
    server answers or closes; the status line it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST /v1/datasets?name=huge HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
                     "Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        payload = b"1,2\n" * (chunk // 4)
        sent = 0
        try:
            while sent < total:
                sock.sendall(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                sent += len(payload)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while b"\r\n" not in answer and (data := sock.recv(4096)):
                answer += data
        except ConnectionResetError:
            pass
    return answer.split(b"\r\n", 1)[0].decode()


def test_the_api_process_memory_does_not_grow_with_the_body(tmp_path: Path) -> None:
    """A 512 MiB chunked body over a 64 MiB cap is refused (413) and a 48 MiB body is stored,
    both without the API process's memory growing with the body (after an 8 MiB warm-up)."""
    env = storage_env(tmp_path, 64 << 20)
    server = ApiProcess(free_port(), {**api_env(free_port(), KEYS), **env}, tmp_path / "api.log").start()
    try:
        pid = server.proc.pid
        status = _stream(server.port, ACME["X-API-Key"], 8 << 20)  # warm up the upload path
        assert " 201 " in status, (status, server.log_tail())
        before = _rss(pid)
        status = _stream(server.port, ACME["X-API-Key"], 512 << 20)
        assert " 413 " in status, status
        time.sleep(0.5)
        grown = _rss(pid) - before
        assert grown < 16 << 20, f"RSS grew by {grown >> 20} MiB over a refused 512 MiB body"
        stored = _stream(server.port, ACME["X-API-Key"], 48 << 20)
        assert " 201 " in stored, stored
        grown = _rss(pid) - before
        # Below the body's 48 MiB, so a held body fails; above the 26-29 MiB that the
        # CSV-to-Parquet path's allocators (and 2 MiB transparent huge pages) sometimes leave.
        assert grown < 36 << 20, f"RSS grew by {grown >> 20} MiB over a stored 48 MiB body"
        assert not list((tmp_path / "scratch" / ".staging" / "uploads").iterdir())
    finally:
        server.stop()


def test_unwritable_storage_or_staging_is_a_503_naming_no_path(api: TestClient, base: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = base / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("E2I_STORAGE_URL", f"file://{blocker}/store")
    response = _post(api, GOOD, name="nowhere")
    assert response.status_code == 503, response.text
    assert "dataset storage is unreachable or not writable" in response.text
    assert str(base) not in response.text and "Traceback" not in response.text
    monkeypatch.undo()
    monkeypatch.setenv("E2I_UPLOAD_STAGING_DIR", str(blocker / "staging"))
    response = _post(api, GOOD, name="nowhere")
    assert response.status_code == 503 and "staging folder is not writable" in response.text
    assert str(base) not in response.text
