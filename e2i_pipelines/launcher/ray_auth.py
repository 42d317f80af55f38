"""Ray token authentication for e2i's own Ray clients (launcher, scaler): the cluster token is
read from a file (or a secret) and sent as ``Authorization: Bearer``; it is never written in
dagster.yaml and never travels in a job's runtime_env.

Where the token comes from, first match wins:

1. ``token_path`` given by the caller (the launcher's ``auth_token_path`` config, a file path);
2. ``RAY_AUTH_TOKEN`` or, e2i's ``*_FILE`` convention, the file named by ``RAY_AUTH_TOKEN_FILE``;
3. the file named by ``RAY_AUTH_TOKEN_PATH`` (Ray's own variable; ``ray start`` reads it too).

Nothing configured means no header: the client then behaves as Ray's own (which sends the token
itself when its process runs with ``RAY_AUTH_MODE=token``).
"""

from __future__ import annotations

import os
from typing import Any

from e2i_pipelines.core.secrets import read_secret

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_MODE_ENV = "RAY_AUTH_MODE"


class RayAuthError(RuntimeError):
    """The Ray token is configured but cannot be used (the message names the setting)."""


def _read_token_file(path: str, setting: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise RayAuthError(f"{setting}: cannot read the Ray token file ({exc.strerror})") from None
    if not token:
        raise RayAuthError(f"{setting}: the Ray token file is empty")
    return token


def read_token(token_path: str | None = None) -> str | None:
    """The Ray cluster token (see the module docstring for the order); None if none is set."""
    if token_path:
        return _read_token_file(token_path, "auth_token_path")
    try:
        token = read_secret(TOKEN_ENV)
    except RuntimeError as exc:
        raise RayAuthError(str(exc)) from None
    if token:
        return token
    path = os.environ.get(TOKEN_PATH_ENV, "").strip()
    return _read_token_file(path, TOKEN_PATH_ENV) if path else None


def auth_headers(token_path: str | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` for Ray's dashboard, or ``{}`` without a token."""
    token = read_token(token_path)
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_client(address: str, token_path: str | None = None, **kwargs: Any) -> Any:
    """A ``JobSubmissionClient`` for the dashboard at ``address`` that sends the token."""
    from ray.job_submission import JobSubmissionClient

    headers = {**(kwargs.pop("headers", None) or {}), **auth_headers(token_path)}
    return JobSubmissionClient(address, headers=headers or None, **kwargs)


def list_nodes(address: str, token_path: str | None = None, timeout: int = 10) -> list[Any]:
    """The cluster's nodes (detailed ``NodeState``s) over the dashboard's state API, with the token."""
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    headers = {"Content-Type": "application/json", **auth_headers(token_path)}
    client = StateApiClient(address=address, headers=headers)
    return client.list(StateResource.NODES, options=ListApiOptions(timeout=timeout, detail=True),
                       raise_on_missing_output=False)
