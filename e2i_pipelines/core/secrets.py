"""Secrets from the environment or from files (Docker secrets, ``*_FILE`` variables).

``read_secret(NAME)``: the variable NAME if set, else the stripped content of the file named by
NAME_FILE, else None. As a command, ``python -m e2i_pipelines.core.secrets CMD ...`` sets every
NAME that has only a NAME_FILE naming a Docker secret (a file under /run/secrets) and execs CMD:
for programs that read secrets from the environment only (Dagster's dagster.yaml ``env:``). Other
``*_FILE`` variables (tool configs) are left alone.

The instance password (``DAGSTER_PG_PASSWORD``) never enters a process environment: it goes to a
0600 libpq password file in the temporary directory (a tmpfs in the containers), ``PGPASSFILE``
names it and ``DAGSTER_PG_PASSWORD`` is set empty, so Dagster builds a URL without a password
and libpq reads it from the file. The object store's secret key (``AWS_SECRET_ACCESS_KEY``) never
enters one either: it goes, with the key id (and session token), to a 0600 AWS shared-credentials
file that ``AWS_SHARED_CREDENTIALS_FILE`` names, and ``AWS_ACCESS_KEY_ID`` leaves the environment
(botocore refuses an id there without its secret), so every S3 client (s3fs, boto3, dagster_aws,
MLflow) authenticates from the file. With ``E2I_RUN_SECRETS_DIR`` set (the compose daemon), the
command also publishes both into the directory, a tmpfs volume run containers mount read-only.
"""

from __future__ import annotations

import contextlib
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
AWS_SECRET = "AWS_SECRET_ACCESS_KEY"
AWS_CREDENTIALS_FILE = "AWS_SHARED_CREDENTIALS_FILE"
AWS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_MOVED = (AWS_KEY_ID, "AWS_SESSION_TOKEN")
"""Variables that go into the credentials file with the secret key and leave the environment."""
TOOL_FILES = frozenset({"AWS_SHARED_CREDENTIALS", "AWS_CONFIG"})
"""NAMEs whose NAME_FILE is a tool's own file (botocore reads it), never exported as a secret."""
RUN_AWS_CREDENTIALS = "aws_credentials"
"""File name of the published credentials in the run-secrets directory."""
_KINDS = {"pgpass": "libpq password file", "aws-credentials": "AWS credentials file"}


def read_secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret ``name``: NAME in ``environ`` (default os.environ), else the stripped content of
    the file named by NAME_FILE."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value:
        return value
    path = env.get(name + FILE_SUFFIX)
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
    ``secrets_dir``; any file when None), NAME unset or empty, not one of :data:`TOOL_FILES`, and
    ``wanted(NAME)`` when given."""
    names = (key[: -len(FILE_SUFFIX)] for key, value in env.items()
             if key.endswith(FILE_SUFFIX) and value and (secrets_dir is None or value.startswith(secrets_dir)))
    return sorted(n for n in names if n and n not in TOOL_FILES and not env.get(n) and (wanted is None or wanted(n)))


def export_file_secrets(environ: MutableMapping[str, str] | None = None, secrets_dir: str | None = SECRETS_DIR,
                        wanted: Callable[[str], bool] | None = None) -> list[str]:
    """Set NAME from NAME_FILE in ``environ`` (default os.environ) for every
    :func:`file_secret_names` NAME; returns the names set. A :data:`PGPASS_SECRETS` NAME is set
    empty instead, its value written to a libpq password file that ``PGPASSFILE`` names (unless
    PGPASSFILE names an existing file: then that one is used); AWS_SECRET_ACCESS_KEY goes to a
    credentials file the same way (:func:`aws_credentials_text`). RuntimeError naming the variable (never the
    content) when a file cannot be read or written. The one reader of ``NAME_FILE`` variables: the
    container entrypoint (``main``) and the run worker (any file, secret names only) use it."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    names = file_secret_names(env, secrets_dir, wanted)
    for name in names:
        prefix = PGPASS_SECRETS.get(name)
        if name == AWS_SECRET:
            _export_aws_credentials(env)
        elif name in AWS_MOVED and _is_file(env.get(AWS_CREDENTIALS_FILE)):
            continue  # already in the credentials file
        elif prefix is None:
            env[name] = read_secret_file(name, env[name + FILE_SUFFIX])
        else:
            if not _is_file(env.get(PGPASSFILE)):  # unset, or another node's file (a Ray job)
                password = read_secret_file(name, env[name + FILE_SUFFIX])
                env[PGPASSFILE] = write_private_file(name, pgpass_lines(password, env, prefix), "pgpass",
                                                     env.get("TMPDIR") or None)
            env[name] = ""
    return names


def _is_file(path: str | None) -> bool:
    return bool(path) and os.path.isfile(path)


def _export_aws_credentials(env: MutableMapping[str, str]) -> None:
    """AWS_SECRET_ACCESS_KEY_FILE -> a private credentials file named by AWS_SHARED_CREDENTIALS_FILE
    (an existing one is kept); the key id and token leave ``env``. An empty secret (an IAM role)
    changes nothing."""
    secret = read_secret_file(AWS_SECRET, env[AWS_SECRET + FILE_SUFFIX])
    if not secret:
        return
    if not _is_file(env.get(AWS_CREDENTIALS_FILE)):
        env[AWS_CREDENTIALS_FILE] = write_private_file(AWS_SECRET, aws_credentials_text(secret, env),
                                                       "aws-credentials", env.get("TMPDIR") or None)
    for moved in AWS_MOVED:
        env.pop(moved, None)


def aws_credentials_text(secret: str, env: Mapping[str, str]) -> str:
    """An AWS shared-credentials file giving ``secret`` with the key id and session token of ``env``
    (NAME or NAME_FILE) under profile AWS_PROFILE (default ``default``). RuntimeError naming the
    variable (never a value) without a key id or with a line break in a value."""
    key_id = read_secret(AWS_KEY_ID, env)
    if not key_id:
        raise RuntimeError(f"{AWS_SECRET}{FILE_SUFFIX}: {AWS_KEY_ID} is not set (a secret key needs its key id)")
    values = {"aws_access_key_id": key_id, "aws_secret_access_key": secret,
              "aws_session_token": read_secret("AWS_SESSION_TOKEN", env)}
    profile = env.get("AWS_PROFILE") or "default"
    for key, value in (*values.items(), ("profile", profile)):
        if value and ("\n" in value or "\r" in value or (key == "profile" and "]" in value)):
            raise RuntimeError(f"{AWS_SECRET}{FILE_SUFFIX}: the {key} cannot go to an AWS credentials file")
    return f"[{profile}]\n" + "".join(f"{key} = {value}\n" for key, value in values.items() if value)


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


def write_private_file(name: str, content: str, kind: str, directory: str | None = None) -> str:
    """Write ``content`` to a 0600 file ``e2i-<kind>-<uid>-<digest>`` in ``directory`` (default: the
    temporary directory; one file per user and content, so repeated starts reuse it); its path.
    RuntimeError naming ``name`` when it cannot be written."""
    digest = hashlib.sha256(content.encode()).hexdigest()[:16]
    try:
        staged = _staged_file(content, f".e2i-{kind}-", directory)
        final = os.path.join(os.path.dirname(staged), f"e2i-{kind}-{os.getuid()}-{digest}")
        try:
            os.replace(staged, final)
        except OSError:  # someone else's file of that name (shared /tmp): keep the private one
            return staged
        return final
    except OSError as exc:
        raise RuntimeError(f"{name}{FILE_SUFFIX}: cannot write the {_KINDS[kind]} ({exc.strerror})") from None


def _publish(directory: str, file_name: str, content: str, name: str) -> None:
    """``content`` as ``directory/file_name`` (0400, replaced atomically); RuntimeError naming ``name``."""
    try:
        staged = _staged_file(content, ".staged-", directory)
        os.chmod(staged, 0o400)
        os.replace(staged, os.path.join(directory, file_name))
    except OSError as exc:
        raise RuntimeError(f"{RUN_SECRETS_DIR_ENV}: cannot publish {name}{FILE_SUFFIX} ({exc.strerror})") from None


def publish_run_secrets(directory: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """For run containers that mount ``directory`` read-only: each :data:`PGPASS_SECRETS` secret
    given as NAME_FILE, copied under the same file name, and the object store's key given as
    AWS_SECRET_ACCESS_KEY_FILE as a credentials file :data:`RUN_AWS_CREDENTIALS` (removed when that
    secret is empty). 0400, replaced atomically; the names published."""
    env = os.environ if environ is None else environ
    copied = []
    for name in sorted(PGPASS_SECRETS):
        path = env.get(name + FILE_SUFFIX)
        if path:
            _publish(directory, os.path.basename(path), read_secret_file(name, path) + "\n", name)
            copied.append(name)
    path = env.get(AWS_SECRET + FILE_SUFFIX)
    secret = read_secret_file(AWS_SECRET, path) if path else ""
    if secret:
        _publish(directory, RUN_AWS_CREDENTIALS, aws_credentials_text(secret, env), AWS_SECRET)
        copied.append(AWS_SECRET)
    elif path:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, RUN_AWS_CREDENTIALS))
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
