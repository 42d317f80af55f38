"""A validated long panel (one row per unit x period) as integer codes and arrays.

:func:`load_panel` checks the frame against the spec before any estimation and raises
:class:`~e2i_pipelines.core.errors.DataValidationError` naming the key and the problem:
duplicate (unit, time) rows, a time column that cannot be ordered, a treatment that is not
0/1 (binary designs), a treatment switching off under ``treatment_off: error``, units treated
in every period, and no never-treated / not-yet-treated controls. An unbalanced panel is
allowed and reported in ``warnings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from e2i_pipelines.core.errors import DataValidationError

NEVER = -1
"""Cohort code of a never-treated unit."""


@dataclass
class PanelData:
    """Codes and arrays of a long panel; ``cohort[u]`` is the period code of unit ``u``'s first
    treated period (:data:`NEVER` when never treated). Rows are sorted by (unit, time)."""

    units: np.ndarray  # unit labels, index = unit code
    periods: np.ndarray  # sorted period labels, index = time code
    unit: np.ndarray  # per row: unit code
    time: np.ndarray  # per row: time code
    y: np.ndarray
    d: np.ndarray  # 0/1, or the dose when treatment_type is continuous
    covariates: np.ndarray | None  # rows x k (time-invariant or pre-treatment)
    covariate_names: list[str]
    weights: np.ndarray | None  # per row
    cluster: np.ndarray  # per row: cluster code
    cohort: np.ndarray  # per unit: first treated period code or NEVER
    balanced: bool
    control_group: str = "never_treated"
    anticipation: int = 0
    treatment_type: str = "binary"
    names: dict[str, str] = field(default_factory=dict)  # role -> column
    warnings: list[str] = field(default_factory=list)

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def n_periods(self) -> int:
        return len(self.periods)

    @property
    def n_clusters(self) -> int:
        return int(self.cluster.max()) + 1 if len(self.cluster) else 0

    @property
    def cohorts(self) -> np.ndarray:
        """Treated cohorts (period codes of first treatment), sorted."""
        return np.unique(self.cohort[self.cohort != NEVER])

    @property
    def staggered(self) -> bool:
        return len(self.cohorts) > 1

    def wide(self, column: str | np.ndarray) -> np.ndarray:
        """(units x periods) array of ``column`` ('y', 'd', 'weights' or a per-row array);
        NaN where a unit has no row for a period."""
        values = getattr(self, column) if isinstance(column, str) else column
        out = np.full((self.n_units, self.n_periods), np.nan)
        out[self.unit, self.time] = values
        return out

    def unit_values(self, values: np.ndarray) -> np.ndarray:
        """The first row's value of each unit (for time-invariant columns)."""
        first = np.r_[0, np.flatnonzero(np.diff(self.unit)) + 1]
        return values[first]

    def frame(self) -> pd.DataFrame:
        """Plain frame of the codes (unit, time, y, d, cohort) for estimators and tests."""
        return pd.DataFrame({"unit": self.unit, "time": self.time, "y": self.y, "d": self.d,
                             "cohort": self.cohort[self.unit]})


def _time_codes(values: pd.Series, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique period labels and each row's code; error when not orderable."""
    if pd.api.types.is_bool_dtype(values):
        raise DataValidationError(f"spec key 'time': column {key!r} is boolean, not orderable")
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values)):
        try:
            values = pd.to_datetime(values, errors="raise", format="mixed")
        except (ValueError, TypeError):
            raise DataValidationError(
                f"spec key 'time': column {key!r} is not orderable (numbers or dates needed, "
                "e.g. 2024-01 or 3)") from None
    return sorted_codes(values)


def sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique labels and each row's int64 code, as ``pd.factorize(sort=True)``; integer
    labels of a dense range are coded by a presence table instead of a hash and a sort."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu" and len(values):
        raw = values.to_numpy()
        lo, hi = int(raw.min()), int(raw.max())
        if hi - lo < 4 * len(raw) + 1024:
            if raw.dtype.kind == "i":  # compiled: no row-sized temporaries
                present = _presence_kernel(raw, lo, hi - lo + 1)
                code_of = np.cumsum(present, dtype=np.int64) - 1
                labels = (np.flatnonzero(present) + lo).astype(raw.dtype)
                return labels, _codes_kernel(raw, lo, code_of)
            shifted = np.subtract(raw, lo, dtype=np.int64)
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[shifted] = True
            code_of = np.cumsum(present, dtype=np.int64) - 1
            return (np.flatnonzero(present) + lo).astype(raw.dtype), code_of[shifted]
    codes, labels = pd.factorize(values, sort=True)
    return np.asarray(labels), codes.astype(np.int64)


@njit(cache=True)
def _presence_kernel(raw, lo, size):  # pragma: no cover - compiled
    present = np.zeros(size, dtype=np.bool_)
    for v in raw:
        present[np.int64(v) - lo] = True
    return present


@njit(cache=True)
def _codes_kernel(raw, lo, code_of):  # pragma: no cover - compiled
    codes = np.empty(len(raw), dtype=np.int64)
    for i in range(len(raw)):
        codes[i] = code_of[np.int64(raw[i]) - lo]
    return codes


def _missing(values: pd.Series) -> int:
    """Missing values of a column (none in a NumPy integer or bool column)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iub":
        return 0
    if isinstance(values.dtype, np.dtype) and values.dtype == np.float64:
        return int(_nan_kernel(values.to_numpy()))
    return int(values.isna().sum())


@njit(cache=True)
def _nan_kernel(values):  # pragma: no cover - compiled
    n = 0
    for v in values:
        n += np.isnan(v)
    return n


@njit(cache=True)
def _binary_kernel(d):  # pragma: no cover - compiled
    for v in d:  # noqa: SIM110 - numba compiles this loop, not all(<generator>)
        if v != 0.0 and v != 1.0:
            return False
    return True


@njit(cache=True)
def _in_order(unit, time):  # pragma: no cover - compiled
    for i in range(1, len(unit)):
        if unit[i] < unit[i - 1] or (unit[i] == unit[i - 1] and time[i] <= time[i - 1]):
            return False
    return True


def _row_order(unit: np.ndarray, time: np.ndarray, n_periods: int, unit_col: str,
               time_col: str) -> np.ndarray | None:
    """Rows sorted by (unit, time) codes (None: already in that order); error on a duplicate
    pair (the first reported is the earliest row repeating an earlier one, as
    ``DataFrame.duplicated``)."""
    if _in_order(unit, time):  # strictly increasing: no duplicates
        return None
    key = unit * n_periods + time
    order = np.argsort(key, kind="stable")
    repeat = key[order][1:] == key[order][:-1]
    if repeat.any():
        rows = order[1:][repeat]
        raise DataValidationError(
            f"spec keys 'unit'/'time': {len(rows)} duplicate ({unit_col}, {time_col}) "
            f"rows, the first at row {int(rows.min()) + 1}")
    return order


@dataclass(frozen=True)
class _Adoption:
    cohort: np.ndarray  # per unit: first period with d > 0, else NEVER
    first_seen: np.ndarray  # per unit: first observed period
    off: np.ndarray  # per unit: an observed d == 0 after the first d > 0


def _adoption(d_wide: np.ndarray) -> _Adoption:
    """Each unit's adoption (units x periods ``d_wide``, NaN = no row), one pass."""
    return _Adoption(*_adoption_kernel(np.ascontiguousarray(d_wide, dtype=np.float64)))


@njit(cache=True)
def _adoption_kernel(d_wide):  # pragma: no cover - compiled
    n, p = d_wide.shape
    cohort = np.full(n, NEVER, dtype=np.int64)
    first_seen = np.zeros(n, dtype=np.int64)
    off = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        seen = -1
        for t in range(p):
            v = d_wide[i, t]
            if np.isnan(v):
                continue
            if seen < 0:
                seen = t
            if cohort[i] == NEVER:
                if v > 0:
                    cohort[i] = t
            elif v == 0:
                off[i] = True
        first_seen[i] = max(seen, 0)
    return cohort, first_seen, off


def load_panel(df: pd.DataFrame, spec: Any, *, source: str = "data",
               checked: bool = False) -> PanelData:
    """Validate ``df`` (long format) against a panel ``spec`` and build :class:`PanelData`.
    ``checked``: ``df`` passed this check already (the dataset step's): the value scans
    (missing values, a 0/1 treatment) are not repeated; what comes with building the codes
    (columns, order and duplicates, adoption, controls) still runs as a cheap assertion."""
    unit_col, time_col = spec.unit, spec.time
    treat, outcome = spec.treatment, spec.outcome
    covariates = list(spec.common_causes)
    needed = [unit_col, time_col, treat, outcome, *covariates,
              *([spec.weights] if spec.weights else []), *([spec.cluster] if spec.cluster else [])]
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise DataValidationError(f"{source} has no column(s) {missing}")
    if df.empty:
        raise DataValidationError(f"{source} is empty (no rows)")
    for col in [] if checked else dict.fromkeys(needed):
        n_null = _missing(df[col])
        if n_null:
            raise DataValidationError(f"column {col!r} has {n_null} missing (NaN) values")
    periods, time = _time_codes(df[time_col], time_col)
    units, unit = sorted_codes(df[unit_col])
    order = _row_order(unit, time, len(periods), unit_col, time_col)

    def take(values: np.ndarray) -> np.ndarray:  # rows in (unit, time) order
        return values if order is None else values[order]

    if not pd.api.types.is_numeric_dtype(df[outcome]) or pd.api.types.is_bool_dtype(df[outcome]):
        raise DataValidationError(f"spec key 'outcome': column {outcome!r} must be numeric")
    if not pd.api.types.is_numeric_dtype(df[treat]):
        raise DataValidationError(f"spec key 'treatment': column {treat!r} must be numeric")
    d = df[treat].to_numpy(dtype=np.float64)
    continuous = spec.treatment_type == "continuous"
    if not continuous and not checked and not _binary_kernel(d):
        shown = sorted(map(str, np.unique(d)))[:5]
        raise DataValidationError(
            f"spec key 'treatment': column {treat!r} must be 0/1 for treatment_type binary; "
            f"found values {shown}")
    unit, time, d = take(unit), take(time), take(d)
    n_units, n_periods = len(units), len(periods)
    balanced = len(df) == n_units * n_periods
    if balanced:  # sorted, no duplicates: the rows are the full grid
        d_wide = d.reshape(n_units, n_periods)
    else:
        d_wide = np.full((n_units, n_periods), np.nan)
        d_wide[unit, time] = d
    adoption = _adoption(d_wide)
    cohort = adoption.cohort
    warnings: list[str] = []
    if not balanced:
        warnings.append(f"unbalanced panel: {len(df):,} rows for {n_units:,} units x "
                        f"{n_periods} periods ({n_units * n_periods - len(df):,} missing)")
    if not continuous:
        _check_adoption(adoption, spec, warnings)
    covs = None
    if covariates:
        bad = [c for c in covariates if not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise DataValidationError(f"spec key 'common_causes': columns {bad} must be numeric")
        covs = take(df[covariates].to_numpy(dtype=np.float64))
    weights = None
    if spec.weights:
        w = take(pd.to_numeric(df[spec.weights], errors="coerce").to_numpy(dtype=np.float64))
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise DataValidationError(
                f"spec key 'weights': column {spec.weights!r} must be finite and >= 0")
        weights = w
    cluster_col = spec.cluster or unit_col
    cluster = (unit if cluster_col == unit_col  # codes in order of appearance = the sorted unit codes
               else pd.factorize(take(df[cluster_col].to_numpy()))[0].astype(np.int64))
    return PanelData(
        units=np.asarray(units), periods=periods, unit=unit, time=time,
        y=take(df[outcome].to_numpy(dtype=np.float64)), d=d, covariates=covs,
        covariate_names=covariates, weights=weights, cluster=cluster, cohort=cohort,
        balanced=balanced, control_group=spec.control_group, anticipation=spec.anticipation,
        treatment_type=spec.treatment_type,
        names={"unit": unit_col, "time": time_col, "treatment": treat, "outcome": outcome,
               "cluster": cluster_col}, warnings=warnings)


def _check_adoption(adoption: _Adoption, spec: Any, warnings: list[str]) -> None:
    """Switching off (an observed 0 after the first 1), always-treated units and the
    existence of controls (binary designs)."""
    cohort, off = adoption.cohort, adoption.off
    if off.any():
        msg = (f"spec key 'treatment_off': {int(off.sum())} unit(s) switch treatment off "
               "(1 then 0)")
        if spec.treatment_off == "error":
            raise DataValidationError(f"{msg}; set treatment_off: allowed to keep them (the "
                                      "first treated period is then the cohort)")
        warnings.append(msg)
    always = (cohort != NEVER) & (cohort == adoption.first_seen)
    if always.any():
        raise DataValidationError(
            f"spec key 'treatment': {int(always.sum())} unit(s) are treated in every observed "
            "period (no pre-treatment period); drop them or extend the panel back in time")
    treated = cohort != NEVER
    if not treated.any():
        raise DataValidationError("spec key 'treatment': no unit is ever treated "
                                  "(every observed d is 0)")
    never = int((~treated).sum())
    if spec.control_group == "never_treated" and never == 0:
        raise DataValidationError(
            "spec key 'control_group' is never_treated but no unit is never treated; use "
            "control_group: not_yet_treated")
    if never == 0 and len(np.unique(cohort[treated])) < 2:
        raise DataValidationError(
            "spec key 'control_group': no never-treated and no not-yet-treated units (all "
            "treated units start together)")


@dataclass(frozen=True)
class CrossSection:
    """One row per unit at the last period before the first launch (``period``); the
    treatment column is each unit's roll-out status (1 = treated later)."""

    frame: pd.DataFrame
    spec: Any  # the cross-section CausalSpec (same columns, no panel keys)
    period: str
    dropped_units: int  # units with no row in that period (unbalanced panels)

    def describe(self) -> str:
        return (f"design: panel -> the last pre-period cross-section (period {self.period}, "
                f"{len(self.frame):,} units, {self.dropped_units:,} without a row there "
                f"dropped); treatment {self.spec.treatment!r} = treated later, outcome and "
                "covariates as of that period")


def last_pre_period(df: pd.DataFrame, spec: Any, *, source: str = "data",
                    panel: PanelData | None = None) -> CrossSection:
    """The panel's last pre-period cross-section (for cross-section jobs such as the twins):
    validated as a panel first (``panel``: ``df`` already loaded), binary treatment only."""
    if spec.treatment_type != "binary":
        raise DataValidationError("spec key 'treatment_type': a continuous (dose) panel has no "
                                  "pre-period cross-section; use treatment_type: binary")
    if panel is None:
        panel = load_panel(df, spec, source=source)
    last = int(panel.cohorts.min()) - panel.anticipation - 1
    if last < 0:
        raise DataValidationError(
            "spec key 'anticipation': no period lies before the first launch less "
            f"{panel.anticipation} anticipation period(s)")
    _, time = _time_codes(df[spec.time], spec.time)
    unit = sorted_codes(df[spec.unit])[1]
    rows = time == last
    frame = df.loc[rows].reset_index(drop=True)
    frame[spec.treatment] = (panel.cohort[unit[rows]] != NEVER).astype(np.int64)
    cross = replace(spec, design="cross_section", unit=None, time=None, weights=None,
                    cluster=None, treatment_off="error", control_group="never_treated",
                    anticipation=0, treatment_type="binary")
    period = pd.Index(panel.periods)[last]
    shown = str(period.date()) if isinstance(period, pd.Timestamp) else str(period)
    return CrossSection(frame=frame, spec=cross, period=shown,
                        dropped_units=panel.n_units - int(rows.sum()))
