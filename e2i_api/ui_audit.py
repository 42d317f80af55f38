"""Audit of the writable Dagster UI: one ``e2i.audit`` line per GraphQL mutation, and
``e2i/terminated_by`` on the runs a logged-in person terminates.

Dagster runs a UI terminate without the request (``cancel_run``/``terminate`` get a run id only),
so the user is taken here, in an ASGI middleware in front of the webserver's app
(``e2i_api.ui_webserver``). The request is data: its JSON body (or query string, as Dagster reads
it) is parsed with ``graphql-core``'s parser, never evaluated. The user is the ``X-E2I-User``
header Caddy sets after ``forward_auth`` (it drops any the client sent).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
from dagster import DagsterInstance, DagsterRunStatus
from graphql import GraphQLError, parse
from graphql.language import (
    FieldNode,
    ListValueNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    ValueNode,
    VariableNode,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from e2i_api.auth.client_address import client_ip
from e2i_pipelines.launcher.run_coordinator import ROLE_HEADER, USER_HEADER, safe_value

audit_logger = logging.getLogger("e2i.audit")
TERMINATED_BY_TAG = "e2i/terminated_by"
TERMINATIONS = frozenset({"terminateRun", "terminatePipelineExecution", "terminateRuns"})
NOT_AUDITED = frozenset({"logTelemetry", "setNuxSeen"})  # UI bookkeeping, no effect on runs
STOPPED = frozenset({DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED})
MAX_BODY = 4 * 1024 * 1024  # larger GraphQL requests are passed through unparsed (and audited so)
MAX_RESPONSE = 1024 * 1024  # the response is read for the mutation's result type up to this size


@dataclass
class MutationCall:
    """One top-level field of a mutation: its name, response key and the run ids it names."""

    name: str
    key: str
    run_ids: list[str] = field(default_factory=list)


def _value(node: ValueNode, variables: Mapping[str, Any]) -> Any:
    if isinstance(node, VariableNode):
        return variables.get(node.name.value)
    if isinstance(node, ListValueNode):
        return [_value(item, variables) for item in node.values]
    return node.value if isinstance(node, StringValueNode) else None


def _run_ids(node: FieldNode, variables: Mapping[str, Any]) -> list[str]:
    ids: list[str] = []
    for argument in node.arguments:
        if argument.name.value not in {"runId", "runIds"}:
            continue
        value = _value(argument.value, variables)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and safe_value(item):
                ids.append(item)
    return ids


def mutation_calls(request: Mapping[str, Any]) -> list[MutationCall] | None:
    """The mutation fields a GraphQL request (``query``/``variables``/``operationName``) runs;
    ``[]`` for a query or subscription, ``None`` when it cannot be parsed (Dagster refuses it too)."""
    query, variables = request.get("query"), request.get("variables") or {}
    if query is None:  # nothing to run: Dagster answers 400
        return []
    if isinstance(variables, str):
        try:
            variables = json.loads(variables)
        except json.JSONDecodeError:
            return None
    if not isinstance(query, str) or not isinstance(variables, dict):
        return None
    try:
        document = parse(query, no_location=True)
    except GraphQLError:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    name = request.get("operationName")
    if name is None:  # GraphQL: without a name the document must hold exactly one operation
        chosen = operations if len(operations) == 1 else []
    else:
        chosen = [o for o in operations if o.name and o.name.value == name]
    if len(chosen) != 1:
        return None
    operation = chosen[0]
    if operation.operation != OperationType.MUTATION:
        return []
    return [MutationCall(node.name.value, node.alias.value if node.alias else node.name.value,
                         _run_ids(node, variables))
            for node in operation.selection_set.selections
            if isinstance(node, FieldNode) and node.name.value not in NOT_AUDITED]


def graphql_request(scope: Scope, body: bytes) -> Mapping[str, Any] | None:
    """The GraphQL request as Dagster's endpoint reads it (JSON, application/graphql or query
    string); None when it cannot be read."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    content_type = headers.get("content-type", "")
    if scope["method"] == "POST" and "application/json" in content_type:
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None
    if scope["method"] == "POST" and "application/graphql" in content_type:
        return {"query": body.decode("utf-8", "replace")}
    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


def _result_of(body: bytes, key: str) -> tuple[str | None, str | None]:
    """The ``__typename`` of a mutation's result and a launched run's id, when the client asked."""
    try:
        result = json.loads(body)["data"][key]
    except (ValueError, KeyError, TypeError):
        return None, None
    if not isinstance(result, dict):
        return None, None
    run = result.get("run")
    run_id = run.get("runId") if isinstance(run, dict) else None
    return result.get("__typename"), run_id if isinstance(run_id, str) else None


class UiAuditMiddleware:
    """Audit every GraphQL mutation to the wrapped Dagster app; tag the runs a user terminates."""

    def __init__(self, app: ASGIApp, instance: DagsterInstance, path: str = "/graphql") -> None:
        self.app, self.instance, self.path = app, instance, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        body, receive = await _buffered(receive)
        request = graphql_request(scope, body) if len(body) <= MAX_BODY else None
        calls = mutation_calls(request) if request is not None else None
        if calls == []:
            await self.app(scope, receive, send)
            return
        watched = [run_id for call in calls or [] if call.name in TERMINATIONS for run_id in call.run_ids]
        before = await anyio.to_thread.run_sync(self._statuses, watched)
        status, chunks, held = 500, [], []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and sum(map(len, chunks)) < MAX_RESPONSE:
                chunks.append(message.get("body", b""))
            held.append(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await anyio.to_thread.run_sync(self._record, scope, calls, before, status, b"".join(chunks))
        for message in held:  # the answer goes out once the audit line and the tags are written
            await send(message)

    def _statuses(self, run_ids: Iterable[str]) -> dict[str, DagsterRunStatus | None]:
        runs = {run_id: self.instance.get_run_by_id(run_id) for run_id in run_ids}
        return {run_id: run.status if run else None for run_id, run in runs.items()}

    def _record(self, scope: Scope, calls: list[MutationCall] | None,
                before: Mapping[str, DagsterRunStatus | None], status: int, body: bytes) -> None:
        headers = dict(scope["headers"])
        user = safe_value(headers.get(USER_HEADER.lower().encode(), b"").decode("latin-1"))
        common = {"principal": user, "role": safe_value(headers.get(ROLE_HEADER.lower().encode(),
                                                                     b"").decode("latin-1")),
                  "client_ip": client_ip(scope), "method": scope["method"], "path": scope["path"]}
        if calls is None:  # unreadable request: Dagster refuses it as well; say so
            audit_logger.info("audit", extra={**common, "action": "graphql_unparsed", "outcome": status})
            return
        after = self._statuses(before)
        for call in calls:
            result, launched = _result_of(body, call.key)
            run_ids = call.run_ids or ([launched] if launched else [])
            entry = {**common, "action": call.name, "run_id": run_ids[0] if len(run_ids) == 1 else None,
                     "run_ids": run_ids, "outcome": result or status}
            if call.name in TERMINATIONS:
                stopped = [r for r in call.run_ids if before.get(r) not in STOPPED and after.get(r) in STOPPED]
                entry["terminated"] = stopped
                for run_id in stopped if user else []:
                    self.instance.add_run_tags(run_id, {TERMINATED_BY_TAG: user})
            audit_logger.info("audit", extra=entry)


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; a ``receive`` that replays it, then delegates."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", receive
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body, replayed = b"".join(chunks), False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay
