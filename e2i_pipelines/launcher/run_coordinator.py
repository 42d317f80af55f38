"""Queued run coordinator that records who launched a run from the UI.

Caddy authenticates people (docker/caddy/Caddyfile, forward_auth to the API) and passes the
identity to the webserver as ``X-E2I-User`` / ``X-E2I-Role``, after dropping any such header the
client sent. ``submit_run`` copies the user into the run tag ``e2i/user`` (as the API records
``e2i/api-client``) and writes an ``e2i.audit`` line. Terminations get an audit line too, but
Dagster gives ``cancel_run`` no request, so their user is not known here (Caddy's access log has
who posted to /graphql).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun

USER_HEADER = "X-E2I-User"
ROLE_HEADER = "X-E2I-Role"
USER_TAG = "e2i/user"
_SAFE_VALUE = re.compile(r"^[\x21-\x7e]{1,256}$")

audit_logger = logging.getLogger("e2i.audit")


class _JsonLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
                 "logger": record.name, "msg": record.getMessage(), **getattr(record, "audit", {})}
        return json.dumps(entry, default=str)


def _audit(action: str, **fields: object) -> None:
    """One JSON line on ``e2i.audit`` (a stderr handler is added when the process has none)."""
    if not audit_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonLine())
        audit_logger.addHandler(handler)
        audit_logger.setLevel(logging.INFO)
        audit_logger.propagate = False
    audit_logger.info(action, extra={"audit": {"action": action, **fields}})


def header_value(context: SubmitRunContext, name: str) -> str | None:
    """A request header if it is a printable token of at most 256 characters, else None."""
    value = context.get_request_header(name)
    return value if isinstance(value, str) and _SAFE_VALUE.match(value) else None


class AttributedRunCoordinator(QueuedRunCoordinator):
    """``QueuedRunCoordinator`` that tags UI launches with ``e2i/user`` and audits them."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        user = header_value(context, USER_HEADER)
        if user is not None:  # overrides any e2i/user the launchpad's tags carried
            self._instance.add_run_tags(run.run_id, {USER_TAG: user})
        submitted = super().submit_run(context)
        if user is not None:
            _audit("ui_launch", principal=user, role=header_value(context, ROLE_HEADER),
                   run_id=run.run_id, job=run.job_name, outcome=submitted.status.value)
        return submitted

    def cancel_run(self, run_id: str) -> bool:
        canceled = super().cancel_run(run_id)
        _audit("terminate", principal=None, run_id=run_id, outcome="canceling" if canceled else "refused",
               note="user not known to the coordinator (no request in cancel_run)")
        return canceled
