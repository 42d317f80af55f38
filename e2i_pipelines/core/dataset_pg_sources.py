"""Postgres connections an operator configured for dataset imports, looked up by name.

``E2I_PG_SOURCES_FILE`` names a YAML or JSON file (read with ``yaml.safe_load``) mapping each
connection name to ``host``, ``dbname``, ``user``, ``password_file`` and optionally ``port``
(5432), ``sslmode`` and ``statement_timeout_s`` (else ``E2I_PG_STATEMENT_TIMEOUT_S``, default
60). A caller only ever names a connection: never a URL, host or credential. The file is read on
every lookup (a change needs no restart); an error in it names the key, never a value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2i_pipelines.core.dataset_ingest import DatasetInvalid

SOURCES_ENV = "E2I_PG_SOURCES_FILE"
TIMEOUT_ENV = "E2I_PG_STATEMENT_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 60.0
MAX_TIMEOUT_S = 3600.0
CONNECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_REQUIRED = ("host", "dbname", "user", "password_file")
_OPTIONAL = ("port", "sslmode", "statement_timeout_s")


class SourceConfigError(RuntimeError):
    """The operator's connections file is missing or wrong (names the key, not the value)."""


class UnknownConnection(DatasetInvalid):
    """The caller named a connection that is not configured."""

    field = "connection"


@dataclass(frozen=True)
class PgSource:
    """One configured connection (the password stays in its file until connect time)."""

    name: str
    host: str
    dbname: str
    user: str
    password_file: Path
    port: int = 5432
    sslmode: str = "prefer"
    statement_timeout_s: float = DEFAULT_TIMEOUT_S

    def password(self) -> str:
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError:
            raise SourceConfigError(f"connection {self.name!r}: password_file cannot be read") from None


def default_timeout() -> float:
    """``E2I_PG_STATEMENT_TIMEOUT_S`` (seconds, default 60)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    return _timeout(raw, TIMEOUT_ENV) if raw else DEFAULT_TIMEOUT_S


def _timeout(raw: Any, key: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if isinstance(raw, bool) or not 0 < value <= MAX_TIMEOUT_S:
        raise SourceConfigError(f"{key} must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]")
    return value


def load_sources() -> dict[str, PgSource]:
    """Every configured connection; empty when ``E2I_PG_SOURCES_FILE`` is unset."""
    path = os.environ.get(SOURCES_ENV, "").strip()
    if not path:
        return {}
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError:
        raise SourceConfigError(f"{SOURCES_ENV} cannot be read") from None
    except yaml.YAMLError:
        raise SourceConfigError(f"{SOURCES_ENV} is not valid YAML or JSON") from None
    if not isinstance(data, dict):
        raise SourceConfigError(f"{SOURCES_ENV} must map connection names to settings")
    return {name: _source(name, entry, file.parent) for name, entry in data.items()}


def _source(name: Any, entry: Any, base: Path) -> PgSource:
    if not isinstance(name, str) or not re.match(CONNECTION_PATTERN, name):
        raise SourceConfigError(f"{SOURCES_ENV}: a connection name must match {CONNECTION_PATTERN}")
    where = f"{SOURCES_ENV}: connection {name!r}"
    if not isinstance(entry, dict):
        raise SourceConfigError(f"{where} must be a mapping of settings")
    unknown = sorted(str(k) for k in entry if k not in (*_REQUIRED, *_OPTIONAL))
    if unknown:
        raise SourceConfigError(f"{where}: unknown key(s) {unknown} (allowed: "
                                f"{', '.join((*_REQUIRED, *_OPTIONAL))}; passwords go in password_file)")
    for key in _REQUIRED:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise SourceConfigError(f"{where}: '{key}' is required (a non-empty string)")
    port = entry.get("port", 5432)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SourceConfigError(f"{where}: 'port' must be an integer 1-65535")
    sslmode = entry.get("sslmode", "prefer")
    if sslmode not in SSLMODES:
        raise SourceConfigError(f"{where}: 'sslmode' must be one of {', '.join(SSLMODES)}")
    timeout = entry.get("statement_timeout_s")
    password_file = Path(entry["password_file"])
    return PgSource(name=name, host=entry["host"], dbname=entry["dbname"], user=entry["user"],
                    password_file=password_file if password_file.is_absolute() else base / password_file,
                    port=port, sslmode=sslmode,
                    statement_timeout_s=default_timeout() if timeout is None
                    else _timeout(timeout, f"{where}: 'statement_timeout_s'"))


def get_source(name: str) -> PgSource:
    """The connection ``name``; UnknownConnection when it is not configured."""
    found = load_sources().get(name) if isinstance(name, str) else None
    if found is None:
        raise UnknownConnection(f"no Postgres connection named {str(name)[:64]!r} is configured "
                                "(connections are set up by the operator)")
    return found
