"""What a Ray job's runtime_env may carry: plain environment variables, never a secret.

A runtime_env is stored by the cluster and readable by anyone who may read its jobs (Jobs API,
dashboard), so the launcher forwards only non-secret variables; the run worker reads secrets on
the node (``NAME_FILE`` files, e.g. a Docker secret: :func:`e2i_pipelines.core.secrets.export_file_secrets`
with ``wanted=is_secret_name``, see :mod:`e2i_pipelines.launcher.run_worker`).
Standard library only: the run worker imports this before its child starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from e2i_pipelines.core.secrets import FILE_SUFFIX

SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)(API_?)?KEYS?$|(^|_)PGPASS",
    re.IGNORECASE,
)
"""Variable names treated as secrets (DAGSTER_PG_PASSWORD, AWS_SECRET_ACCESS_KEY, E2I_API_KEYS,
RAY_AUTH_TOKEN, ...). ``*_FILE`` and ``*_PATH`` names are paths, not secrets."""

PATH_SUFFIXES = (FILE_SUFFIX, "_PATH")


def is_secret_name(name: str) -> bool:
    """True when the variable ``name`` holds a secret by its name (a ``*_FILE`` path does not)."""
    return not name.upper().endswith(PATH_SUFFIXES) and bool(SECRET_NAME.search(name))


def split_secrets(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``env`` without its secret variables, and the sorted names that were left out."""
    kept = {k: v for k, v in env.items() if not is_secret_name(k)}
    return kept, sorted(k for k in env if k not in kept)

