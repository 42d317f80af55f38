"""``json.dumps(..., default=json_default)`` for the numpy and pandas values reports hold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def json_default(value: Any) -> Any:
    """numpy scalars as Python values, DataFrames as records, timestamps as ISO text;
    anything else is an error."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DataFrame):
        return value.to_dict("records")
    if isinstance(value, pd.Timestamp):  # period labels of a dated panel
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
