"""Container health probes for the e2i compose stack (mounted read-only into each container).

Usage (exit 0 healthy, 1 unhealthy, with one line saying why):

    python healthcheck.py http URL            # HTTP 2xx from URL (API, MLflow)
    python healthcheck.py webserver URL       # Dagster webserver answers GraphQL at URL and
                                              # every code location of its workspace is loaded
    python healthcheck.py grpc HOST:PORT      # code server answers ListRepositories, code loaded
    python healthcheck.py daemon [MAX_AGE_S]  # dagster-daemon heartbeats written since this
                                              # container started and younger than MAX_AGE_S

Kept to the standard library plus grpc/psycopg2 (and the tiny e2i_pipelines.core.secrets) so a
probe costs ~0.2 s, not a Dagster import. A probe runs as `docker exec`, outside the entrypoint:
secrets are read from their *_FILE here.
"""

import json
import os
import sys
import time
import urllib.request

DAEMONS_REQUIRED = ("QUEUED_RUN_COORDINATOR", "MONITORING", "SENSOR")


def check_http(url: str, timeout: float = 4.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed local URL
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{url} answered HTTP {response.status}")
        return f"{url} HTTP {response.status}"


WORKSPACE_QUERY = (
    "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus"
    " locationOrLoadError { __typename ... on PythonError { message } } } } } }"
)


def check_webserver(url: str, timeout: float = 8.0) -> str:
    request = urllib.request.Request(
        f"{url.rstrip('/')}/graphql", data=json.dumps({"query": WORKSPACE_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - fixed local URL
        workspace = json.load(response)["data"]["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise RuntimeError(f"workspace not available: {workspace}")
    entries = workspace["locationEntries"]
    if not entries:
        raise RuntimeError("the workspace has no code location")
    for entry in entries:
        loaded = entry["locationOrLoadError"] or {}
        if entry["loadStatus"] != "LOADED" or loaded.get("__typename") != "RepositoryLocation":
            detail = str(loaded.get("message", ""))[:300]
            raise RuntimeError(f"code location {entry['name']!r} {entry['loadStatus']} {detail}".strip())
    return f"webserver sees {[e['name'] for e in entries]} loaded"


def _read_string_field(message: bytes) -> str:
    """Field 1 (a string) of a one-field protobuf message, without generated code."""
    if not message:
        return ""
    if message[0] != 0x0A:
        raise RuntimeError(f"unexpected protobuf tag {message[0]:#x}")
    length, shift, pos = 0, 0, 1
    while True:
        byte = message[pos]
        length |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            break
        shift += 7
    return message[pos : pos + length].decode()


def check_grpc(target: str, timeout: float = 8.0) -> str:
    import grpc

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/api.DagsterApi/ListRepositories")
        reply = call(b"", timeout=timeout)
    payload = json.loads(_read_string_field(reply) or "{}")
    kind = payload.get("__class__")
    if kind != "ListRepositoriesResponse":
        raise RuntimeError(f"code location not loaded: {kind}: {str(payload.get('message', ''))[:300]}")
    names = [r.get("repository_name") for r in payload.get("repository_symbols", [])]
    return f"code server {target} loaded {names}"


def check_daemon(max_age: float = 90.0) -> str:
    import psycopg2

    from e2i_pipelines.core.secrets import read_secret

    started = os.stat("/proc/1").st_mtime  # this container's first process
    conn = psycopg2.connect(
        host=os.environ["DAGSTER_PG_HOST"], port=os.environ.get("DAGSTER_PG_PORT", "5432"),
        user=os.environ["DAGSTER_PG_USERNAME"], password=read_secret("DAGSTER_PG_PASSWORD"),
        dbname=os.environ["DAGSTER_PG_DB"], connect_timeout=4,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT daemon_type, EXTRACT(EPOCH FROM timestamp) FROM daemon_heartbeats")
            beats = {daemon: float(ts) for daemon, ts in cur.fetchall()}
    finally:
        conn.close()
    now = time.time()
    stale = [d for d in DAEMONS_REQUIRED if not (started - 5 <= beats.get(d, 0) and now - beats[d] <= max_age)]
    if stale:
        raise RuntimeError(f"no fresh heartbeat since container start from {stale}")
    return f"daemon heartbeats fresh: {sorted(beats)}"


def main(argv: list[str]) -> int:
    probes = {"http": check_http, "webserver": check_webserver, "grpc": check_grpc, "daemon": lambda *a: check_daemon(*map(float, a))}
    if len(argv) < 2 or argv[1] not in probes:
        print(f"usage: healthcheck.py {{{'|'.join(probes)}}} [ARG]", file=sys.stderr)
        return 2
    try:
        print(probes[argv[1]](*argv[2:]))
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy; say which
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
