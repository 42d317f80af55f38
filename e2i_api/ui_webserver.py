"""The writable Dagster webserver behind the UI audit middleware (``e2i_api.ui_audit``).

``python -m e2i_api.ui_webserver -h 0.0.0.0 -p 3000 -w workspace.yaml`` serves Dagster's own
webserver app (``dagster_webserver.app``) on the instance of ``$DAGSTER_HOME``, with the same
database settings as ``dagster-webserver``; every GraphQL mutation is audited and UI
terminations carry ``e2i/terminated_by``. The read-only viewer needs no wrapper.
"""

from __future__ import annotations

import argparse
import logging

import uvicorn
from dagster import DagsterInstance
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._utils.log import configure_loggers
from dagster_webserver.app import create_app_from_workspace_process_context
from dagster_webserver.cli import (
    DEFAULT_DB_STATEMENT_TIMEOUT,
    DEFAULT_POOL_MAX_OVERFLOW,
    DEFAULT_POOL_RECYCLE,
)
from dagster_webserver.version import __version__

from e2i_api.core.logging import configure_logging
from e2i_api.ui_audit import UiAuditMiddleware


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m e2i_api.ui_webserver", add_help=False,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--help", action="help")
    parser.add_argument("-h", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=3000)
    parser.add_argument("-w", "--workspace", action="append", required=True, help="workspace.yaml (repeatable)")
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve the audited writable webserver until interrupted."""
    args = _args(argv)
    configure_loggers(log_level="INFO")
    configure_logging("INFO")  # e2i.audit as JSON lines on stderr, like the API's
    with DagsterInstance.get() as instance:
        instance.optimize_for_webserver(DEFAULT_DB_STATEMENT_TIMEOUT, DEFAULT_POOL_RECYCLE,
                                        DEFAULT_POOL_MAX_OVERFLOW)
        with WorkspaceProcessContext(instance, version=__version__, read_only=False,
                                     workspace_load_target=WorkspaceFileTarget(paths=args.workspace)) as context:
            app = create_app_from_workspace_process_context(context)
            logging.getLogger("dagster-webserver").info(
                "Serving the audited dagster-webserver on http://%s:%s", args.host, args.port)
            uvicorn.run(UiAuditMiddleware(app, instance), host=args.host, port=args.port,
                        log_level=args.log_level)


if __name__ == "__main__":
    main()
