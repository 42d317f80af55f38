"""The load run of the fault-tolerance suite: 50 loopback clients against the API (through Caddy,
with TLS, as deployed) + a real webserver on Postgres (``benchmarks/load_api.py``), mixing status polls, results reads and run
submissions. It must answer every request. CI runs it short (15 s mixed, 10 s per launch phase):
the assertion is zero errors, not speed; the 60 s run is the benchmark itself
(``flock /tmp/e2i-heavy.lock python benchmarks/load_api.py --clients 50 --duration 60``,
numbers in benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _pg_connect, require

LOAD_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_api.py"


def _postgres_up() -> bool:
    try:
        _pg_connect().close()
    except Exception:  # noqa: BLE001 - any connection failure means "no postgres"
        return False
    return True


@pytest.mark.postgres
@pytest.mark.webserver
def test_fifty_clients_get_no_errors() -> None:
    require(_postgres_up(), "PostgreSQL on 127.0.0.1:5432")
    done = subprocess.run([sys.executable, str(LOAD_SCRIPT), "--clients", "50", "--duration", "15",
                           "--launch-duration", "10", "--warmup", "5"],
                          capture_output=True, text=True, timeout=600)
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stderr[-4000:]
    assert "through Caddy at https://127.0.0.1:" in done.stdout  # as deployed: TLS via Caddy
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    by_phase = {(r["phase"], r["endpoint"]): r for r in rows}
    assert {r["phase"] for r in rows} >= {"mix", "post", "launchRun"}
    assert all(r["errors"] == 0 for r in rows), [(k, r["error_kinds"]) for k, r in by_phase.items() if r["errors"]]
    mixed = [r for r in rows if r["phase"] == "mix"]
    assert {r["endpoint"] for r in mixed} == {"GET /v1/runs/{id}", "GET /v1/runs/{id}/results", "POST /v1/runs"}
    assert all(r["ok"] > 0 for r in rows)
