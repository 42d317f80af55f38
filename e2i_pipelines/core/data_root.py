"""Where run parameters may name files: one data root (``E2I_DATA_ROOT``), one folder per client.

A path from a run parameter (``dataset.path``, ``dataset.spec_path``, a spec's ``graph``) is
resolved by :func:`resolve_user_path`: a relative path is taken under the caller's folder, then
``Path.resolve()`` follows symlinks and ``..``, and the result must lie in that folder. An API
key's client is confined to ``<root>/<client>/`` for spec and graph files and names its data by
an uploaded dataset id (``core.datasets``), never by ``dataset.path``; ``admin`` keys and runs
launched from the Dagster UI (no API client) may name any file under the root. Errors name the key and what is
wrong, never the file's content, its resolved location, or whether a file outside exists.

Default root: ``$E2I_DATA_DIR/inputs`` (see :func:`e2i_pipelines.core.storage.default_data_dir`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.storage import default_data_dir

DATA_ROOT_ENV = "E2I_DATA_ROOT"
_SHOWN = 120
MAX_SPEC_BYTES = 1 << 20
"""Spec and graph files larger than this are refused before they are read."""


class DataPathError(DataValidationError):
    """A path parameter names a file outside the caller's folder (or is not a usable path)."""


def data_root() -> Path:
    """``E2I_DATA_ROOT``, else ``<E2I_DATA_DIR>/inputs``; absolute, symlinks resolved."""
    raw = os.environ.get(DATA_ROOT_ENV) or str(Path(default_data_dir()) / "inputs")
    return Path(raw).expanduser().resolve()


def check_folder_name(name: str) -> str:
    """``name`` when it is one plain path component (a client folder); else DataPathError."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or name != name.strip()):
        raise DataPathError(f"client name {_shown(name)!r} cannot be used as a data folder name")
    return name


@dataclass(frozen=True)
class DataScope:
    """Who names the files: ``client`` (an API key's client name) and whether it is ``admin``.

    ``client=None`` is a run launched without the API (Dagster UI, CLI): the whole root.
    """

    client: str | None = None
    admin: bool = False

    @property
    def folder(self) -> str:
        """The client folder paths are confined to; ``""`` means the whole root."""
        return "" if self.admin or self.client is None else check_folder_name(self.client)


def allowed_dir(folder: str = "") -> Path:
    """``<root>/<folder>`` (``folder`` one plain component), or the root for ``""``."""
    root = data_root()
    if not folder:
        return root
    path = (root / check_folder_name(folder)).resolve()
    if not path.is_relative_to(root):  # an operator's symlinked client folder pointing out
        raise DataPathError(f"data folder of client {_shown(folder)!r} is outside the data root")
    return path


def resolve_user_path(value: str, key: str, folder: str = "",
                      base_dir: str | Path | None = None, quote: bool = True) -> Path:
    """The resolved file ``value`` names, which must lie under :func:`allowed_dir` ``(folder)``.

    Relative paths are taken under ``base_dir`` (e.g. a spec file's folder) when given, else
    under the allowed folder. ``key`` names the parameter in errors (``dataset.path``), which
    quote ``value`` only when ``quote`` (not for a path read from a file). Nothing is read and
    nothing outside the folder is looked at beyond path resolution.
    """
    allowed = allowed_dir(folder)
    where = f"your data folder ({folder}/ under the data root)" if folder else "the data root"
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise DataPathError(f"{key} must be a file path under {where}")
    raw = Path(value.strip())
    if raw.is_absolute():
        candidate = raw
    else:
        candidate = (Path(base_dir) if base_dir is not None else allowed) / raw
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError):  # symlink loop, name too long, not encodable
        resolved = None
        if Path(os.path.normpath(candidate)).is_relative_to(allowed):
            raise DataPathError(f"{key} is not a usable file path") from None
    if resolved is None or not resolved.is_relative_to(allowed):
        shown = repr(_shown(value)) if quote else "its path"
        raise DataPathError(f"{key} must name a file under {where}; {shown} resolves outside it")
    return resolved


def is_regular_file(path: Path) -> bool:
    """``path.is_file()``, False (not an error) for names too long or not encodable."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
