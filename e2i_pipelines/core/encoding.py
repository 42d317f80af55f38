"""Turn covariates into model inputs: categories for trees, one-hot numbers for regressions."""

from __future__ import annotations

import numpy as np
import pandas as pd


def categorical_columns(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns among ``columns`` that are not numeric or boolean."""
    return [
        c for c in columns
        if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))
    ]


def numeric_design(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Float design matrix: numeric columns as is, categoricals one-hot (first level dropped)."""
    cats = categorical_columns(df, columns)
    frame = pd.get_dummies(df[columns], columns=cats, drop_first=True, dtype=np.float64)
    return frame.astype(np.float64)
