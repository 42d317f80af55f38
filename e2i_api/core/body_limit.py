"""Pure ASGI middleware: refuse request bodies over a byte cap with 413, before any parsing.

The declared ``Content-Length`` is checked first; the streamed body (chunked or not) is counted
as the application reads it, and reading past the cap raises ``BodyTooLarge`` (413). Dataset
uploads (``POST /v1/datasets``) have their own cap, ``E2I_MAX_UPLOAD_BYTES``, instead.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from e2i_api.core.logging import request_id_var
from e2i_pipelines.core.datasets import max_upload_bytes

UPLOAD_ROUTES = frozenset({("POST", "/v1/datasets")})
"""Routes capped by ``E2I_MAX_UPLOAD_BYTES`` (they stream the body to disk) instead of the body cap."""


class BodyTooLarge(HTTPException):
    """The request body exceeds the cap."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"request body larger than {cap} bytes")


class BodyLimitMiddleware:
    """413 for a request whose body (declared or streamed) exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = max_upload_bytes() if upload_bytes is None else upload_bytes

    async def _refuse(self, send: Send, cap: int) -> None:
        body = json.dumps({"detail": BodyTooLarge(cap).detail,
                           "request_id": request_id_var.get()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = (scope["method"], scope["path"].rstrip("/")) in UPLOAD_ROUTES
        cap = self.upload_bytes if upload else self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await self._refuse(send, cap)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(cap)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send, cap)
