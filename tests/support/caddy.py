"""Caddy on 127.0.0.1 with the production Caddyfile (docker/caddy/Caddyfile, its internal CA)
in front of local API and webserver processes: TLS, forward_auth for the UI, the API by key."""

from __future__ import annotations

import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.dagster_processes import REPO_ROOT, DagsterProcess, free_port

CADDYFILE = REPO_ROOT / "docker" / "caddy" / "Caddyfile"


@dataclass
class Caddy:
    """A running Caddy: its HTTPS URL, root CA and process."""

    root: Path
    https_port: int
    proc: DagsterProcess

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def root_ca(self) -> Path:
        return self.root / "caddy-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts only this Caddy's internal root CA."""
        return ssl.create_default_context(cafile=str(self.root_ca))

    def stop(self) -> None:
        self.proc.stop()


def start_caddy(root: Path, *, api: str, webserver: str, viewer: str,
                https_port: int | None = None, http_port: int | None = None,
                timeout: float = 60) -> Caddy:
    """Start Caddy under ``root`` (its data and log) proxying to the ``host:port`` upstreams;
    returns once its certificate is issued and the API answers through it."""
    binary = shutil.which("caddy")
    if binary is None:
        raise RuntimeError("caddy is not installed (scripts/start_services.sh installs it)")
    https_port = https_port or free_port()
    env = {
        "E2I_SITE_ADDRESS": f"https://127.0.0.1:{https_port}", "E2I_TLS": "internal",
        "E2I_HTTPS_PORT": str(https_port), "E2I_HTTP_PORT": str(http_port or free_port()),
        "E2I_API_UPSTREAM": api, "E2I_WEBSERVER_UPSTREAM": webserver, "E2I_VIEWER_UPSTREAM": viewer,
        "XDG_DATA_HOME": str(root / "caddy-data"), "XDG_CONFIG_HOME": str(root / "caddy-config"),
    }
    proc = DagsterProcess([binary, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                          root, env, log_path=root / "caddy.log").start()
    caddy = Caddy(root, https_port, proc)

    def ready() -> bool:
        if not caddy.root_ca.exists():
            return False
        try:
            return httpx.get(f"{caddy.url}/health", verify=caddy.ssl_context(), timeout=5).is_success
        except httpx.HTTPError:
            return False

    try:
        proc.wait_until(ready, timeout)
    except BaseException:
        proc.stop()
        raise
    return caddy
