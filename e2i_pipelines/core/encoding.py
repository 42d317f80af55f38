"""Turn covariates into model inputs: categories for trees, one-hot numbers for regressions."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


def categorical_columns(df: pd.DataFrame, columns: list[str],
                        declared: Iterable[str] = ()) -> list[str]:
    """Columns among ``columns`` that are declared categorical or are not numeric/boolean."""
    declared = set(declared)
    return [
        c for c in columns
        if c in declared
        or not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))
    ]


def numeric_design(df: pd.DataFrame, columns: list[str],
                   declared: Iterable[str] = ()) -> pd.DataFrame:
    """Float design matrix: numeric columns as is, categoricals (declared or not numeric)
    one-hot coded with the first level dropped."""
    if not columns:
        return pd.DataFrame(index=df.index)
    cats = categorical_columns(df, columns, declared)
    frame = pd.get_dummies(df[columns], columns=cats, drop_first=True, dtype=np.float64)
    return frame.astype(np.float64)
