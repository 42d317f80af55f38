"""Attack suite, Ray part (issue 24 "a Ray job submitted without the token: refused"): token
authentication on the real cluster of tests/ray/conftest.py. It lives here, not in
tests/security, because the Ray suite runs in a network namespace of its own
(scripts/test_ray.sh); it is part of the attack suite all the same.

Each attack asserts the refusal and that nothing happened: the job's entrypoint would create a
canary file, which must not exist, and the cluster lists no such job. The clients without the
token run in a clean process (no RAY_AUTH_* variables, an empty HOME), as an attacker's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from e2i_pipelines.launcher import ray_auth
from e2i_pipelines.scaler.ray_capacity import ray_capacity

pytestmark = [pytest.mark.ray]
WAIT_FOR_CANARY = 8.0
"""Seconds a job that was (wrongly) accepted would need at most to create its canary here (a
job's supervisor starts in 6-12 s on 2 cores; the refusal checks also list the cluster's jobs)."""


def _post_job(url: str, canary: Path, headers: dict[str, str]) -> tuple[int, str]:
    body = json.dumps({"entrypoint": f"touch {canary}"}).encode()
    request = urllib.request.Request(f"{url}/api/jobs/", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An attacker's environment: no Ray token anywhere, a HOME without ~/.ray/auth_token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "RAY_AUTH_MODE": "disabled", **extra}


def _assert_never_ran(ray_cluster, canary: Path) -> None:
    """No job with the canary in its entrypoint exists, and the canary never appeared."""
    deadline = time.monotonic() + WAIT_FOR_CANARY
    while time.monotonic() < deadline and not canary.exists():
        time.sleep(0.5)
    assert not canary.exists()
    jobs = ray_auth.job_client(ray_cluster.dashboard_url, str(ray_cluster.token_path)).list_jobs()
    assert not [j for j in jobs if str(canary) in (j.entrypoint or "")]


def test_job_without_a_token_is_refused_and_never_runs(ray_cluster, tmp_path):
    canary = tmp_path / "canary-no-token"
    status, body = _post_job(ray_cluster.dashboard_url, canary, {})
    assert status == 401, body
    _assert_never_ran(ray_cluster, canary)


def test_job_with_a_wrong_token_is_refused_and_never_runs(ray_cluster, tmp_path):
    canary = tmp_path / "canary-wrong-token"
    for headers in ({"Authorization": "Bearer " + "0" * 64},
                    {"X-Ray-Authorization": "Bearer " + ray_cluster.token()[:-1] + "x"},
                    {"Cookie": "ray-authentication-token=guess"}):
        status, body = _post_job(ray_cluster.dashboard_url, canary, headers)
        assert status == 403, (headers.keys(), body)
    _assert_never_ran(ray_cluster, canary)


def test_ray_cli_without_the_token_is_refused(ray_cluster, tmp_path):
    """``ray job submit`` as an attacker runs it: no token in its environment."""
    canary = tmp_path / "canary-cli"
    done = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--no-wait",
         "--address", ray_cluster.dashboard_url, "--", "touch", str(canary)],
        env=_clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "401" in done.stdout + done.stderr or "Authentication" in done.stdout + done.stderr
    _assert_never_ran(ray_cluster, canary)


def test_node_agent_job_api_needs_the_token_too(ray_cluster, tmp_path):
    """Each node's dashboard agent has a job API of its own (the head's on the default port)."""
    canary = tmp_path / "canary-agent"
    status, _body = _post_job("http://127.0.0.1:52365", canary, {})
    assert status == 401
    _assert_never_ran(ray_cluster, canary)


def test_the_token_file_is_private(ray_cluster):
    assert ray_cluster.token_path.stat().st_mode & 0o777 == 0o600
    assert ray_cluster.token_path.parent.stat().st_mode & 0o777 == 0o700
    assert len(ray_cluster.token()) == 64  # 256 bits, as `ray get-auth-token --generate`


def _listening() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket in this network namespace."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            found.append((address if len(address) == width else "?", int(port, 16)))
    return found


def test_dashboard_and_ray_ports_are_not_bound_to_every_interface(ray_cluster):
    listening = _listening()
    wildcard = {"00000000", "0" * 32}
    dashboard = [addr for addr, port in listening if port == ray_cluster.dashboard_port]
    assert dashboard == ["0100007F"], dashboard  # 127.0.0.1 only
    assert not [(a, p) for a, p in listening if a in wildcard], listening


def test_launcher_and_scaler_use_the_token_file_in_a_clean_process(ray_cluster, tmp_path):
    """The launcher's client and the scaler's capacity reader send the token from
    ``auth_token_path`` alone; without it the same calls are refused."""
    code = f"""
import json, sys
from e2i_pipelines.launcher.tiered_ray_run_launcher import TieredRayRunLauncher
from e2i_pipelines.scaler.ray_capacity import ray_capacity
url, token = {ray_cluster.dashboard_url!r}, sys.argv[1] or None
out = {{}}
try:
    launcher = TieredRayRunLauncher.from_config_value(None, {{"ray": {{"address": url}},
                                                              "auth_token_path": token}})
    out["jobs"] = len(launcher.client.list_jobs())
    out["nodes"] = len(ray_capacity(url, token_path=token).nodes)
except Exception as exc:
    out["error"] = str(exc)[:300]
print(json.dumps(out))
"""

    def attempt(token: str) -> dict:
        done = subprocess.run([sys.executable, "-c", code, token], env=_clean_env(tmp_path),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    allowed = attempt(str(ray_cluster.token_path))
    assert "error" not in allowed and allowed["nodes"] == len(ray_cluster.nodes) + 1, allowed
    refused = attempt("")
    assert "401" in refused.get("error", "") or "Authentication" in refused.get("error", ""), refused


def test_scaler_with_a_wrong_token_file_is_refused(ray_cluster, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("f" * 64)
    with pytest.raises(Exception, match="403|Authentication failed"):
        ray_capacity(ray_cluster.dashboard_url, token_path=str(wrong))
