"""Queued run coordinator that records who launched a run from the UI.

Caddy authenticates people (docker/caddy/Caddyfile, forward_auth to the API) and passes the
identity to the webserver as ``X-E2I-User`` / ``X-E2I-Role``, after dropping any such header the
client sent. ``submit_run`` copies the user into the run tag ``e2i/user`` (as the API records
``e2i/api-client``). Dagster gives ``cancel_run`` no request: the writable webserver's wrapper
(``e2i_api.ui_webserver``) audits every UI mutation and tags terminations with their user.
"""

from __future__ import annotations

import re

from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun

USER_HEADER = "X-E2I-User"
ROLE_HEADER = "X-E2I-Role"
USER_TAG = "e2i/user"
_SAFE_VALUE = re.compile(r"^[\x21-\x7e]{1,256}$")


def safe_value(value: object) -> str | None:
    """``value`` if it is a printable token of at most 256 characters, else None."""
    return value if isinstance(value, str) and _SAFE_VALUE.match(value) else None


def header_value(context: SubmitRunContext, name: str) -> str | None:
    """A request header if it is a printable token of at most 256 characters, else None."""
    return safe_value(context.get_request_header(name))


class AttributedRunCoordinator(QueuedRunCoordinator):
    """``QueuedRunCoordinator`` that tags UI launches with ``e2i/user``."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        user = header_value(context, USER_HEADER)
        if user is not None:  # overrides any e2i/user the launchpad's tags carried
            self._instance.add_run_tags(run.run_id, {USER_TAG: user})
        return super().submit_run(context)
