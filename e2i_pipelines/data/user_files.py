"""Users' own CSV/Parquet files: check header and values against the spec before loading all."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from e2i_pipelines.core.data_root import is_regular_file
from e2i_pipelines.core.errors import DataValidationError
from e2i_pipelines.core.spec import (
    CausalSpec,
    MissingReport,
    apply_missing_policy,
    check_columns,
    validate_frame,
)

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def file_format(path: str | Path) -> str:
    """'csv' or 'parquet' from the file name; anything else is an error."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataValidationError(
            f"file {str(path)!r} has unsupported type {suffix or '(none)'!r}; use .csv or .parquet"
        )
    return SUFFIXES[suffix]


def header_columns(path: str | Path, shown: str | None = None) -> list[str]:
    """Column names without reading the data (raises on a missing or empty file).

    ``shown`` is how errors name the file (default: ``path``); they never quote its content.
    """
    p = Path(path)
    label = f"data file {shown or str(p)!r}"
    if not is_regular_file(p):
        raise DataValidationError(f"{label} does not exist")
    if p.stat().st_size == 0:
        raise DataValidationError(f"{label} is empty")
    if file_format(p) == "parquet":
        try:
            return list(pq.read_schema(p).names)
        except Exception:  # noqa: BLE001 - pyarrow raises several types
            raise DataValidationError(f"{label} is not valid Parquet") from None
    try:
        return list(pd.read_csv(p, nrows=0).columns)
    except pd.errors.EmptyDataError:
        raise DataValidationError(f"{label} is empty") from None
    except (ValueError, UnicodeDecodeError):  # ParserError is a ValueError
        raise DataValidationError(f"{label} is not a readable CSV file") from None


def load_user_frame(path: str | Path, spec: CausalSpec, shown: str | None = None
                    ) -> tuple[pd.DataFrame, MissingReport]:
    """Load the spec's columns of ``path``, apply ``missing`` and validate them (roles, NaNs,
    binary treatment); returns the frame and what ``missing: drop`` removed.

    ``path`` must already be checked against the data root (``DatasetConfig.data_path``);
    ``shown`` is how errors name it (default: ``path``).
    """
    spec.check_roles()
    columns = header_columns(path, shown)
    source = f"data file {shown or str(path)!r}"
    check_columns(spec, columns, source)
    wanted = [*spec.required_columns, *([spec.id_column] if spec.id_column else [])]
    if file_format(path) == "parquet":
        frame = pd.read_parquet(path, columns=wanted)
    else:
        frame = pd.read_csv(path, usecols=wanted)
    frame, report = apply_missing_policy(frame, spec, source=source)
    validate_frame(frame, spec, source=source)
    return frame[wanted], report
