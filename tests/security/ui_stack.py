"""The UI login stack for tests, all real and on 127.0.0.1: a mock OpenID provider
(oidc-provider-mock), the API (uvicorn), the writable webserver as deployed (``python -m
e2i_api.ui_webserver``: Dagster's app behind the UI audit middleware) with a ``dagster-daemon``, a
``dagster-webserver --read-only`` on the same instance, and Caddy (docker/caddy/Caddyfile, its
internal CA) in front of them. ``UiStack`` starts them; ``login`` does the OIDC dance over HTTP.
Runs tagged ``HOLD_TAG`` stay queued (a tag concurrency limit of 0), to be terminated.
"""

from __future__ import annotations

import json
import secrets
import ssl
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import dagster as dg
import httpx
import yaml

from e2i_api.auth.session import LOGIN_COOKIE, SESSION_COOKIE
from tests.api.api_processes import ApiProcess, api_env
from tests.support.caddy import start_caddy
from tests.support.dagster_processes import (
    DagsterProcess,
    dagster_daemon,
    free_port,
    write_instance_yaml,
)

SESSION_SECRET = "ui-login-test-session-secret-0123456789abcdef"
OPS_KEY = secrets.token_urlsafe(32)
"""An admin API key of client ``ops`` (may cancel any client's run)."""
CLIENT_ID = "e2i-ui"
LOCATION = "ui"
JOB = "probe_light_job"
HOLD_TAG = "e2i-test/hold"
USERS = {
    "editor@example.com": ["e2i-editors"],
    "viewer@example.com": ["e2i-viewers"],
    "nobody@example.com": ["staff"],
}
ROLE_MAP = {"e2i-editors": "editor", "e2i-viewers": "viewer"}
# Only the probe jobs: each process loads the location in ~2 s instead of ~10 s.
LOCATION_MODULE = ("from e2i_pipelines.defs.diagnostics.assets import probe_definitions\n"
                   "defs = probe_definitions()\n")


def _wait_http(proc: DagsterProcess, url: str, timeout: float = 180.0, **kwargs) -> None:
    proc.wait_until(lambda: httpx.get(url, timeout=2, **kwargs).status_code < 500, timeout)


def set_cookie(response: httpx.Response, name: str) -> str:
    """The value ``response`` sets for cookie ``name`` (it must set it)."""
    for header in response.headers.get_list("set-cookie"):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    raise AssertionError(f"no {name} cookie set (status {response.status_code})")


@dataclass
class UiStack:
    """Every part's address; ``start`` brings them up, ``close`` stops them."""

    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    _stack: ExitStack = field(default_factory=ExitStack)

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.ports['caddy']}"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.ports['idp']}"

    @property
    def writable(self) -> str:
        return f"http://127.0.0.1:{self.ports['webserver']}"

    @property
    def webserver_log(self) -> Path:
        """The writable webserver's output (its e2i.audit JSON lines among it)."""
        return self.root / "webserver.log"

    @property
    def api_log(self) -> Path:
        """The API's output (its e2i.audit JSON lines among it)."""
        return self.root / "api.log"

    @property
    def root_ca(self) -> Path:
        return self.root / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def start(self) -> UiStack:
        for name in ("idp", "api", "webserver", "viewer", "caddy", "caddy_http"):
            self.ports[name] = free_port()
        try:
            self._start_idp()
            workspace = self._workspace()
            # Create the SQLite stores once, here: processes that stamp a fresh store at the
            # same time can leave two alembic heads, and the next webserver refuses to start.
            with dg.DagsterInstance.from_config(str(self.home)) as instance:
                instance.get_runs(limit=1)
                instance.all_instigator_state()
            writable = DagsterProcess(
                [sys.executable, "-m", "e2i_api.ui_webserver", "-h", "127.0.0.1",
                 "-p", str(self.ports["webserver"]), "-w", str(workspace)],
                self.home, log_path=self.webserver_log).start()
            self._stack.callback(writable.stop)
            daemon = dagster_daemon(self.home, workspace=workspace)
            self._stack.callback(daemon.stop)
            _wait_http(writable, f"{self.writable}/server_info", 300)
            viewer = DagsterProcess(
                [sys.executable, "-m", "dagster_webserver", "--read-only", "-h", "127.0.0.1",
                 "-p", str(self.ports["viewer"]), "-w", str(workspace)],
                self.home, log_path=self.root / "webserver-viewer.log").start()
            self._stack.callback(viewer.stop)
            _wait_http(viewer, f"http://127.0.0.1:{self.ports['viewer']}/server_info", 300)
            self._start_api()
            self._start_caddy()
        except BaseException:
            self.close()
            raise
        return self

    def _start_idp(self) -> None:
        args = [sys.executable, "-m", "oidc_provider_mock", "-H", "127.0.0.1", "-p", str(self.ports["idp"]),
                "--require-nonce", "true"]
        for user, groups in USERS.items():
            args += ["--user-claims", json.dumps({"sub": user, "email": user, "groups": groups})]
        idp = DagsterProcess(args, self.root, log_path=self.root / "idp.log").start()
        self._stack.callback(idp.stop)
        _wait_http(idp, f"{self.issuer}/.well-known/openid-configuration", 60)

    def _workspace(self) -> Path:
        write_instance_yaml(self.home, {"run_coordinator": {
            "module": "e2i_pipelines.launcher.run_coordinator", "class": "AttributedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1}},
            "concurrency": {"pools": {"granularity": "run", "default_limit": 1000},
                            "runs": {"tag_concurrency_limits": [{"key": HOLD_TAG, "limit": 0}]}}})
        (self.root / "ui_location.py").write_text(LOCATION_MODULE)
        workspace = self.root / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"python_file": {
            "relative_path": "ui_location.py", "working_directory": str(self.root),
            "location_name": LOCATION}}]}))
        return workspace

    def _start_api(self) -> None:
        keys = [{"name": "ops", "key": OPS_KEY, "scopes": ["runs:read", "runs:write", "admin"]}]
        env = api_env(self.ports["webserver"], keys, **{
            "E2I_API_OIDC__ISSUER": self.issuer, "E2I_API_OIDC__CLIENT_ID": CLIENT_ID,
            "E2I_API_OIDC__CLIENT_SECRET": "mock-idp-accepts-any-secret",
            "E2I_API_OIDC__REDIRECT_URL": f"{self.url}/auth/callback",
            "E2I_API_OIDC__SESSION_SECRET": SESSION_SECRET,
            "E2I_API_OIDC__ROLE_MAP": json.dumps(ROLE_MAP),
        })
        api = ApiProcess(self.ports["api"], env, self.api_log).start(timeout=300)
        self._stack.callback(api.stop)

    def _start_caddy(self) -> None:
        caddy = start_caddy(self.root, api=f"127.0.0.1:{self.ports['api']}",
                            webserver=f"127.0.0.1:{self.ports['webserver']}",
                            viewer=f"127.0.0.1:{self.ports['viewer']}",
                            https_port=self.ports["caddy"], http_port=self.ports["caddy_http"])
        self._stack.callback(caddy.stop)

    def close(self) -> None:
        self._stack.close()

    def client(self, **kwargs) -> httpx.Client:
        """An HTTPS client of Caddy that trusts only Caddy's internal root CA; no redirects."""
        context = ssl.create_default_context(cafile=str(self.root_ca))
        return httpx.Client(base_url=self.url, verify=context, follow_redirects=False, timeout=30, **kwargs)

    def login(self, user: str, next_path: str = "/runs", expect: str = "/runs") -> str:
        """Log ``user`` in through Caddy, the API and the IdP; the session cookie's value."""
        with self.client() as client:
            start = client.get("/auth/login", params={"next": next_path})
            assert start.status_code == 302, start.text
            authorize = start.headers["location"]
            assert authorize.startswith(self.issuer)
            consent = httpx.post(authorize, data={"sub": user}, follow_redirects=False, timeout=30)
            assert consent.status_code == 302, consent.text
            callback = consent.headers["location"]
            assert callback.startswith(f"{self.url}/auth/callback"), callback
            login_cookie = set_cookie(start, LOGIN_COOKIE)
            done = client.get(urljoin(self.url, callback), headers={"Cookie": f"{LOGIN_COOKIE}={login_cookie}"})
            assert done.status_code == 302, f"{done.status_code} {done.text}"
            assert done.headers["location"] == expect
            return set_cookie(done, SESSION_COOKIE)

    def runs(self) -> list[dict]:
        """Every run of the instance, with tags (read from the writable webserver directly)."""
        query = "{ runsOrError { ... on Runs { results { runId jobName tags { key value } } } } }"
        body = httpx.post(f"{self.writable}/graphql", json={"query": query}, timeout=30).json()
        return [{"run_id": r["runId"], "job": r["jobName"], "tags": {t["key"]: t["value"] for t in r["tags"]}}
                for r in body["data"]["runsOrError"]["results"]]

    def run_tags(self, run_id: str) -> dict[str, str]:
        """A run's tags (from the writable webserver directly)."""
        return next(r["tags"] for r in self.runs() if r["run_id"] == run_id)

    def audit_lines(self, log: Path | None = None) -> list[dict]:
        """The e2i.audit lines so far of the writable webserver (or of ``log``, e.g. api_log)."""
        return [json.loads(line) for line in (log or self.webserver_log).read_text().splitlines()
                if line.startswith("{") and '"e2i.audit"' in line]

    def run_status(self, run_id: str) -> str:
        """A run's status (from the writable webserver directly)."""
        query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
        body = httpx.post(f"{self.writable}/graphql", json={"query": query, "variables": {"id": run_id}},
                          timeout=30).json()
        return body["data"]["runOrError"]["status"]
