"""Secrets from the environment or from files (Docker secrets, ``*_FILE`` variables).

``read_secret(NAME)``: the variable NAME if set, else the stripped content of the file named by
NAME_FILE, else None. As a command, ``python -m e2i_pipelines.core.secrets CMD ...`` sets every
NAME that has only a NAME_FILE naming a Docker secret (a file under /run/secrets) and execs CMD:
for programs that read secrets from the environment only (Dagster's dagster.yaml ``env:``). Other
``*_FILE`` variables (tool configs) are left alone.

The instance password (``DAGSTER_PG_PASSWORD``) never enters a process environment: it goes to a
0600 libpq password file in the temporary directory (a tmpfs in the containers), ``PGPASSFILE``
names it and ``DAGSTER_PG_PASSWORD`` is set empty, so Dagster builds a URL without a password
and libpq reads it from the file. With ``E2I_RUN_SECRETS_DIR`` set (the compose daemon), the
command also copies that secret into the directory, a tmpfs volume run containers mount read-only.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, MutableMapping

FILE_SUFFIX = "_FILE"
SECRETS_DIR = "/run/secrets/"
PGPASSFILE = "PGPASSFILE"
PGPASS_SECRETS = {"DAGSTER_PG_PASSWORD": "DAGSTER_PG"}
"""Secrets that go to a libpq password file, not the environment: NAME -> prefix of the
HOST/PORT/USERNAME variables its pgpass line is restricted to."""
RUN_SECRETS_DIR_ENV = "E2I_RUN_SECRETS_DIR"


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
    :func:`file_secret_names` NAME; returns the names set. A :data:`PGPASS_SECRETS` NAME is set
    empty instead, its value written to a libpq password file that ``PGPASSFILE`` names (unless
    PGPASSFILE is already set: then that file is used). RuntimeError naming the variable (never the
    content) when a file cannot be read or written. The one reader of ``NAME_FILE`` variables: the
    container entrypoint (``main``) and the run worker (any file, secret names only) use it."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    names = file_secret_names(env, secrets_dir, wanted)
    for name in names:
        prefix = PGPASS_SECRETS.get(name)
        if prefix is None:
            env[name] = read_secret_file(name, env[name + FILE_SUFFIX])
            continue
        if not env.get(PGPASSFILE):
            password = read_secret_file(name, env[name + FILE_SUFFIX])
            env[PGPASSFILE] = write_pgpass(name, pgpass_lines(password, env, prefix), env.get("TMPDIR") or None)
        env[name] = ""
    return names


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_lines(password: str, env: Mapping[str, str], prefix: str) -> str:
    """libpq password-file lines giving ``password`` to the server and user named by
    PREFIX_HOST, PREFIX_PORT and PREFIX_USERNAME only (``*`` for an unset one; a socket
    directory also as ``localhost``, which is how libpq names its default socket)."""
    if "\n" in password or "\r" in password:
        raise RuntimeError("the Postgres password has a line break: it cannot go to a libpq password file")
    host = env.get(f"{prefix}_HOST") or ""
    port, user = (_pgpass_field(env.get(f"{prefix}_{key}") or "") or "*" for key in ("PORT", "USERNAME"))
    hosts = ["*"] if not host else [_pgpass_field(host), "localhost"] if host.startswith("/") else [_pgpass_field(host)]
    return "".join(f"{h}:{port}:*:{user}:{_pgpass_field(password)}\n" for h in hosts)


def _staged_file(content: str, prefix: str, directory: str | None) -> str:
    """A new 0600 file in ``directory`` holding ``content`` (to be renamed into place); its path."""
    fd, staged = tempfile.mkstemp(prefix=prefix, dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return staged


def write_pgpass(name: str, content: str, directory: str | None = None) -> str:
    """Write ``content`` to a 0600 file in ``directory`` (default: the temporary directory; one
    file per user and content, so repeated starts reuse it); its path. RuntimeError naming
    ``name`` when it cannot be written."""
    digest = hashlib.sha256(content.encode()).hexdigest()[:16]
    try:
        staged = _staged_file(content, ".e2i-pgpass-", directory)
        final = os.path.join(os.path.dirname(staged), f"e2i-pgpass-{os.getuid()}-{digest}")
        try:
            os.replace(staged, final)
        except OSError:  # someone else's file of that name (shared /tmp): keep the private one
            return staged
        return final
    except OSError as exc:
        raise RuntimeError(f"{name}{FILE_SUFFIX}: cannot write the libpq password file ({exc.strerror})") from None


def publish_run_secrets(directory: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Copy each :data:`PGPASS_SECRETS` secret given as NAME_FILE into ``directory`` (0400, same
    file name, replaced atomically) for run containers that mount it read-only; the names copied."""
    env = os.environ if environ is None else environ
    copied = []
    for name in sorted(PGPASS_SECRETS):
        path = env.get(name + FILE_SUFFIX)
        if not path:
            continue
        value = read_secret_file(name, path)
        try:
            staged = _staged_file(value + "\n", ".staged-", directory)
            os.chmod(staged, 0o400)
            os.replace(staged, os.path.join(directory, os.path.basename(path)))
        except OSError as exc:
            raise RuntimeError(f"{RUN_SECRETS_DIR_ENV}: cannot publish {name}{FILE_SUFFIX} ({exc.strerror})") from None
        copied.append(name)
    return copied


def main(argv: list[str]) -> int:
    """Export file secrets, then exec ``argv`` (never returns on success)."""
    if not argv:
        print("usage: python -m e2i_pipelines.core.secrets COMMAND [ARG...]", file=sys.stderr)
        return 2
    try:
        if os.environ.get(RUN_SECRETS_DIR_ENV):
            publish_run_secrets(os.environ[RUN_SECRETS_DIR_ENV])
        export_file_secrets()
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    os.execvp(argv[0], argv)  # noqa: S606 - the container's own fixed command, not user input
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
