"""Secrets from the environment or from files (Docker secrets, ``*_FILE`` variables).

``read_secret(NAME)``: the variable NAME if set, else the stripped content of the file named by
NAME_FILE, else None. As a command, ``python -m e2i_pipelines.core.secrets CMD ...`` sets every
NAME that has only a NAME_FILE naming a Docker secret (a file under /run/secrets, e.g.
DAGSTER_PG_PASSWORD from DAGSTER_PG_PASSWORD_FILE) and execs CMD: for programs that read secrets
from the environment only (Dagster's dagster.yaml ``env:``). Other ``*_FILE`` variables (tool
configs) are left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, MutableMapping

FILE_SUFFIX = "_FILE"
SECRETS_DIR = "/run/secrets/"


def read_secret(name: str) -> str | None:
    """The secret ``name``: env NAME, else the stripped content of the file named by NAME_FILE."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(name + FILE_SUFFIX)
    return read_secret_file(name, path) if path else None


def read_secret_file(name: str, path: str) -> str:
    """The stripped content of the secret file ``path`` given as NAME_FILE; RuntimeError naming
    the variable (never the content) when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise RuntimeError(f"{name}{FILE_SUFFIX}: cannot read the secret file ({exc.strerror})") from None


def file_secret_names(env: Mapping[str, str], secrets_dir: str | None = SECRETS_DIR,
                      wanted: Callable[[str], bool] | None = None) -> list[str]:
    """The sorted NAMEs that ``env`` gives only as a file: NAME_FILE set (to a file under
    ``secrets_dir``; any file when None), NAME unset or empty, and ``wanted(NAME)`` when given."""
    names = (key[: -len(FILE_SUFFIX)] for key, value in env.items()
             if key.endswith(FILE_SUFFIX) and value and (secrets_dir is None or value.startswith(secrets_dir)))
    return sorted(n for n in names if n and not env.get(n) and (wanted is None or wanted(n)))


def export_file_secrets(environ: MutableMapping[str, str] | None = None, secrets_dir: str | None = SECRETS_DIR,
                        wanted: Callable[[str], bool] | None = None) -> list[str]:
    """Set NAME from NAME_FILE in ``environ`` (default os.environ) for every
    :func:`file_secret_names` NAME; returns the names set. RuntimeError naming the variable (never
    the content) when a file cannot be read. The one reader of ``NAME_FILE`` variables: the
    container entrypoint (``main``) and the run worker (any file, secret names only) use it."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    names = file_secret_names(env, secrets_dir, wanted)
    for name in names:
        env[name] = read_secret_file(name, env[name + FILE_SUFFIX])
    return names


def main(argv: list[str]) -> int:
    """Export file secrets, then exec ``argv`` (never returns on success)."""
    if not argv:
        print("usage: python -m e2i_pipelines.core.secrets COMMAND [ARG...]", file=sys.stderr)
        return 2
    try:
        export_file_secrets()
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    os.execvp(argv[0], argv)  # noqa: S606 - the container's own fixed command, not user input
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
