"""Audit log: one JSON line (logger ``e2i.audit``) per mutating request, whatever its outcome."""

from __future__ import annotations

import logging
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

audit_logger = logging.getLogger("e2i.audit")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_RUN_LOCATION = re.compile(rb"^/v1/runs/([0-9a-f-]{36})$")


class AuditMiddleware:
    """Log principal, client IP, action, run id and outcome (status) of every non-read request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        outcome, created = 500, None

        async def watched(message: Message) -> None:
            nonlocal outcome, created
            if message["type"] == "http.response.start":
                outcome = message["status"]
                location = dict(message.get("headers", [])).get(b"location", b"")
                found = _RUN_LOCATION.match(location)
                created = found.group(1).decode() if found else None
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            principal = scope.get("state", {}).get("principal")
            endpoint = scope.get("endpoint")
            audit_logger.info("audit", extra={
                "principal": principal.name if principal is not None else None,
                "client_ip": (scope.get("client") or ("-",))[0],
                "action": getattr(endpoint, "__name__", None) or f"{scope['method']} {scope['path']}",
                "method": scope["method"], "path": scope["path"],
                "run_id": (scope.get("path_params") or {}).get("run_id") or created,
                "outcome": outcome,
            })
