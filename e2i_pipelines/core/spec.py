"""The causal spec of a dataset (column roles, design, estimand) and its validation.

Keys (YAML file or inline run config; every key is checked and errors name it):

* ``treatment`` (binary 0/1), ``outcome`` (numeric): required.
* ``common_causes``: observed confounders; may be empty (a randomised experiment).
* ``effect_modifiers``: columns the effect may vary with (CATE per segment).
* ``categorical``: columns coded as categories whatever their dtype (integer codes such as a
  region 0-9). Non-numeric columns are categorical anyway.
* ``missing``: ``error`` (default) rejects NaN in the spec's columns; ``drop`` drops those rows,
  records how many per column, and fails when fewer than :data:`MIN_ROWS_AFTER_DROP` remain.
* ``target``: the estimand, ``ate`` (default), ``att`` or ``atc``.
* ``graph``: an optional causal DAG (DOT or GML, inline or a file path). The backdoor
  adjustment set is then identified from it (DoWhy) instead of taken from ``common_causes``.
* ``id_column``: unique row id; one is added when absent.
* ``design``: ``cross_section`` (default) or ``panel`` (long format, one row per unit x
  period; see ``analytics.panel``). Panel keys: ``unit`` and ``time`` (required),
  ``treatment_off`` (``error`` default | ``allowed``), ``weights``, ``cluster`` (default: the
  unit), ``control_group`` (``never_treated`` default | ``not_yet_treated``),
  ``anticipation`` (periods, >= 0), ``treatment_type`` (``binary`` default | ``continuous``,
  a dose), and ``covariates`` (same as ``common_causes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from e2i_pipelines.core.data_root import MAX_SPEC_BYTES, is_regular_file, resolve_user_path
from e2i_pipelines.core.errors import DataValidationError

if TYPE_CHECKING:  # pandas is imported where frames are checked: the API's upload path needs none
    import pandas as pd

TARGETS = ("ate", "att", "atc")
MISSING_POLICIES = ("error", "drop")
MIN_ROWS_AFTER_DROP = 50
"""``missing: drop`` fails when fewer rows remain (or one treatment arm has fewer than 10)."""
MIN_ROWS_PER_ARM = 10
DESIGNS = ("cross_section", "panel")
TREATMENT_OFF = ("error", "allowed")
CONTROL_GROUPS = ("never_treated", "not_yet_treated")
TREATMENT_TYPES = ("binary", "continuous")
PANEL_ONLY_KEYS = ("unit", "time", "weights", "cluster")


@dataclass(frozen=True)
class CausalSpec:
    """Which columns play which role, and what is estimated. ``graph`` holds DOT/GML text."""

    treatment: str
    outcome: str
    common_causes: list[str]
    effect_modifiers: list[str] = field(default_factory=list)
    id_column: str | None = None
    categorical: list[str] = field(default_factory=list)
    missing: str = "error"
    target: str = "ate"
    graph: str | None = None
    design: str = "cross_section"
    unit: str | None = None
    time: str | None = None
    treatment_off: str = "error"
    weights: str | None = None
    cluster: str | None = None
    control_group: str = "never_treated"
    anticipation: int = 0
    treatment_type: str = "binary"

    @property
    def panel(self) -> bool:
        return self.design == "panel"

    @property
    def covariates(self) -> list[str]:
        """Common causes then effect modifiers, without repeats (the outcome model's inputs)."""
        return list(dict.fromkeys([*self.common_causes, *self.effect_modifiers]))

    @cached_property
    def parsed_graph(self):  # -> ParsedGraph | None (lazy: networkx + pydot load in ~2 s)
        if not self.graph:
            return None
        from e2i_pipelines.core.graph import parse_graph

        return parse_graph(self.graph)

    @property
    def graph_columns(self) -> list[str]:
        """Observed graph nodes other than treatment and outcome (data columns they name)."""
        g = self.parsed_graph
        if g is None:
            return []
        return [n for n in g.observed if n not in (self.treatment, self.outcome)]

    @property
    def required_columns(self) -> list[str]:
        """Every column the spec names: treatment, outcome, covariates, graph nodes."""
        panel = [c for c in (self.unit, self.time, self.weights, self.cluster) if c]
        return list(dict.fromkeys(
            [self.treatment, self.outcome, *self.covariates, *self.graph_columns, *panel]))

    @cached_property
    def adjustment_set(self) -> list[str]:
        """The confounders adjusted for: identified from ``graph`` when given, else
        ``common_causes``. Empty means a randomised design (difference in means)."""
        g = self.parsed_graph
        if g is None:
            return list(self.common_causes)
        from e2i_pipelines.core.graph import backdoor_adjustment_set

        return backdoor_adjustment_set(g, self.treatment, self.outcome)

    @property
    def randomised(self) -> bool:
        return not self.adjustment_set

    def check_roles(self) -> None:
        """Raise naming the key when a value is invalid or a column plays two roles.

        Cheap and data-free (graph parsing and identification included), so it runs before
        any data is read and in the API before a run is launched.
        """
        if not self.treatment or not self.outcome:
            raise DataValidationError("spec needs both 'treatment' and 'outcome'")
        if self.treatment == self.outcome:
            raise DataValidationError(f"column {self.treatment!r} is both treatment and outcome")
        for col in self.covariates:
            if col in (self.treatment, self.outcome):
                raise DataValidationError(
                    f"column {col!r} is listed as a covariate and as treatment/outcome"
                )
        if self.target not in TARGETS:
            raise DataValidationError(
                f"spec key 'target' is {self.target!r}; expected one of {list(TARGETS)}")
        if self.missing not in MISSING_POLICIES:
            raise DataValidationError(
                f"spec key 'missing' is {self.missing!r}; expected one of "
                f"{list(MISSING_POLICIES)}")
        self._check_design()
        if self.graph is not None:
            from e2i_pipelines.core.graph import check_graph

            check_graph(self.parsed_graph, self.treatment, self.outcome)
            outside = [c for c in self.covariates if c not in self.parsed_graph.nodes]
            if outside:
                raise DataValidationError(
                    f"spec columns {outside} are not nodes of 'graph'; add them to the graph "
                    "or drop them from common_causes/effect_modifiers")
            _ = self.adjustment_set  # not identifiable -> GraphError with DoWhy's reason
        candidates = set(self.required_columns) - {self.treatment, self.outcome}
        bad = [c for c in self.categorical if c not in candidates]
        if bad:
            raise DataValidationError(
                f"spec key 'categorical' names {bad}, which are not covariates of the spec "
                f"(common_causes, effect_modifiers or graph nodes: {sorted(candidates)})")

    def _check_design(self) -> None:
        """The design keys: allowed values, and panel-only keys only with ``design: panel``."""
        for key, allowed in (("design", DESIGNS), ("treatment_off", TREATMENT_OFF),
                             ("control_group", CONTROL_GROUPS),
                             ("treatment_type", TREATMENT_TYPES)):
            if getattr(self, key) not in allowed:
                raise DataValidationError(
                    f"spec key {key!r} is {getattr(self, key)!r}; expected one of {list(allowed)}")
        if isinstance(self.anticipation, bool) or not isinstance(self.anticipation, int) \
                or self.anticipation < 0:
            raise DataValidationError("spec key 'anticipation' must be an integer >= 0 (periods)")
        if not self.panel:
            given = [k for k in PANEL_ONLY_KEYS if getattr(self, k)]
            if given or self.treatment_type != "binary":
                raise DataValidationError(
                    f"spec keys {given or ['treatment_type']} need design: panel")
            return
        missing = [k for k in ("unit", "time") if not getattr(self, k)]
        if missing:
            raise DataValidationError(f"design: panel needs spec key(s) {missing}")
        if self.graph is not None:
            raise DataValidationError("spec key 'graph' is not supported with design: panel")
        roles = {"unit": self.unit, "time": self.time, "treatment": self.treatment,
                 "outcome": self.outcome, "weights": self.weights}
        seen: dict[str, str] = {}
        for key, col in roles.items():
            if col and col in seen:
                raise DataValidationError(
                    f"spec keys {seen[col]!r} and {key!r} name the same column {col!r}")
            if col:
                seen[col] = key
        clash = [c for c in self.covariates if c in seen]
        if clash:
            raise DataValidationError(
                f"spec key 'common_causes' lists {clash}, which play another role")


_SPEC_TYPES: dict[str, type | tuple[type, ...]] = {
    "treatment": str, "outcome": str, "common_causes": list, "effect_modifiers": list,
    "id_column": str, "categorical": list, "missing": str, "target": str, "graph": str,
    "design": str, "unit": str, "time": str, "treatment_off": str, "weights": str,
    "cluster": str, "control_group": str, "anticipation": int, "treatment_type": str,
    "covariates": list,
}
SPEC_KEYS = tuple(_SPEC_TYPES)


def spec_from_mapping(raw: Mapping[str, Any], *, source: str = "spec",
                      base_dir: str | Path | None = None, folder: str = "",
                      graph_key: str = "graph", quote_graph: bool = True) -> CausalSpec:
    """A checked :class:`CausalSpec` from a mapping (a YAML file or inline config).

    Unknown keys, wrong types and missing ``treatment``/``outcome`` are errors naming the
    key; a ``graph`` that is a file path is read (relative to ``base_dir``, else the data
    folder) only when it lies under the data folder ``folder`` (see ``core.data_root``);
    errors quote that path only when ``quote_graph`` (not when it comes from a file).
    """
    unknown = set(raw) - set(_SPEC_TYPES)
    if unknown:
        raise DataValidationError(
            f"{source} has unknown keys {sorted(unknown)}; allowed: {sorted(_SPEC_TYPES)}")
    missing = [k for k in ("treatment", "outcome") if not raw.get(k)]
    if missing:
        raise DataValidationError(f"{source} is missing {missing}")
    values = {k: v for k, v in raw.items() if v is not None}
    for key, value in values.items():
        if not isinstance(value, _SPEC_TYPES[key]):
            raise DataValidationError(
                f"{source} key {key!r} must be a {_SPEC_TYPES[key].__name__}, "
                f"got a {type(value).__name__}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise DataValidationError(f"{source} key {key!r} must list column names (strings)")
    if "covariates" in values and "common_causes" in values:
        raise DataValidationError(f"{source}: give 'covariates' or 'common_causes', not both")
    if isinstance(values.get("anticipation"), bool):
        raise DataValidationError(f"{source} key 'anticipation' must be an int, got a bool")
    graph = values.get("graph") or None
    if graph is not None:
        from e2i_pipelines.core.graph import graph_text

        graph = graph_text(graph, base_dir, folder=folder, key=graph_key, quote=quote_graph)
    spec = CausalSpec(
        treatment=values["treatment"], outcome=values["outcome"],
        common_causes=list(values.get("common_causes", values.get("covariates", []))),
        effect_modifiers=list(values.get("effect_modifiers", [])),
        id_column=values.get("id_column") or None,
        categorical=list(values.get("categorical", [])),
        missing=values.get("missing", "error"), target=values.get("target", "ate"),
        graph=graph,
        **{k: values[k] for k in ("design", "unit", "time", "treatment_off", "weights",
                                  "cluster", "control_group", "anticipation", "treatment_type")
           if k in values},
    )
    spec.check_roles()
    return spec


def load_spec_yaml(path: str | Path, *, key: str = "spec_path", folder: str = "") -> CausalSpec:
    """Read a spec YAML file under the data folder ``folder`` (see ``core.data_root``) and
    check it (see :func:`spec_from_mapping`); a graph path is relative to the spec file.

    Errors name ``key`` and the problem; they never quote the file's lines.
    """
    p = resolve_user_path(str(path), key, folder)
    shown = f"{key}: spec file {_shorten(str(path))!r}"
    if not is_regular_file(p):
        raise DataValidationError(f"{shown} does not exist")
    if p.stat().st_size > MAX_SPEC_BYTES:
        raise DataValidationError(f"{shown} is larger than {MAX_SPEC_BYTES // 1024} KiB")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise DataValidationError(f"{shown} is not UTF-8 text") from None
    except OSError:
        raise DataValidationError(f"{shown} cannot be read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise DataValidationError(f"{shown} is not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise DataValidationError(f"{shown} is not a YAML mapping of spec keys")
    return spec_from_mapping(raw, source=shown, base_dir=p.parent, folder=folder,
                             graph_key=f"{key} (its 'graph')", quote_graph=False)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class MissingReport:
    """What ``missing: drop`` removed: rows before/after and NaN rows per column."""

    rows_before: int
    rows_after: int
    nan_rows_per_column: dict[str, int]

    @property
    def rows_dropped(self) -> int:
        return self.rows_before - self.rows_after


def apply_missing_policy(df: pd.DataFrame, spec: CausalSpec, *,
                         source: str = "data") -> tuple[pd.DataFrame, MissingReport]:
    """Drop rows with NaN in the spec's columns (``missing: drop``); ``error`` keeps all rows
    for :func:`validate_frame` to reject. Too few rows left is an error naming the counts."""
    import pandas as pd

    cols = [c for c in spec.required_columns if c in df.columns]
    nan = df[cols].isna()
    per_column = {c: int(n) for c, n in nan.sum().items() if n}
    if spec.missing != "drop" or not per_column:
        return df, MissingReport(len(df), len(df), per_column)
    kept = df.loc[~nan.any(axis=1)].reset_index(drop=True)
    report = MissingReport(len(df), len(kept), per_column)
    arms = kept[spec.treatment].value_counts()
    if spec.treatment_type == "continuous":  # a dose has no arms
        arms = pd.Series([len(kept), len(kept)], index=["dose", "dose"])
    if len(kept) < MIN_ROWS_AFTER_DROP or len(arms) < 2 or arms.min() < MIN_ROWS_PER_ARM:
        raise DataValidationError(
            f"{source}: missing: drop leaves {len(kept)} of {len(df)} rows "
            f"({dict(arms.astype(int))} per treatment arm); need at least "
            f"{MIN_ROWS_AFTER_DROP} rows and {MIN_ROWS_PER_ARM} per arm. NaN rows per column: "
            f"{per_column}")
    return kept, report


def check_columns(spec: CausalSpec, columns: list[str], source: str = "data") -> None:
    """Raise when ``columns`` (a file's header) lack a column the spec names."""
    wanted = spec.required_columns + ([spec.id_column] if spec.id_column else [])
    missing = [c for c in wanted if c not in columns]
    graph_only = [c for c in missing if c in spec.graph_columns and c not in spec.covariates]
    if graph_only:
        raise DataValidationError(
            f"graph node(s) {graph_only} are not columns of {source}; mark unobserved "
            f"variables with observed=\"no\"; columns: {columns}")
    if missing:
        raise DataValidationError(f"{source} has no column(s) {missing}; available: {columns}")


def _missing_count(series: pd.Series) -> int:
    """NaN/None values of ``series``. NumPy integer and bool columns hold none; a float column
    is summed first (NaN propagates; one pass, no mask) and counted only if the sum is not
    finite."""
    import numpy as np

    if isinstance(series.dtype, np.dtype):
        if series.dtype.kind in "biu":
            return 0
        if series.dtype.kind == "f":
            with np.errstate(invalid="ignore"):  # inf + -inf
                if np.isfinite(series.to_numpy().sum()):
                    return 0
    return int(series.isna().sum())


def _binary_range(series: pd.Series) -> set:
    """The treatment's distinct values, or for a NumPy integer/bool column its {min, max}
    (every value lies between them, so the 0/1 checks read the same)."""
    import numpy as np
    import pandas as pd

    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biu":
        values = series.to_numpy()
        return {int(values.min()), int(values.max())}
    return set(pd.unique(series))


def validate_frame(df: pd.DataFrame, spec: CausalSpec, *, source: str = "data") -> None:
    """Check ``df`` against ``spec`` before any heavy work; raise naming column and problem."""
    import pandas as pd

    spec.check_roles()
    if df.empty:
        raise DataValidationError(f"{source} is empty (no rows)")
    check_columns(spec, list(df.columns), source)
    for col in spec.required_columns:
        n_null = _missing_count(df[col])
        if n_null:
            raise DataValidationError(
                f"column {col!r} has {n_null} missing (NaN) values (spec key 'missing: drop' "
                "drops such rows)")
    if spec.treatment_type == "continuous":
        if not pd.api.types.is_numeric_dtype(df[spec.treatment]):
            raise DataValidationError(
                f"treatment column {spec.treatment!r} must be a numeric dose")
        values = {0, 1}
    else:
        values = _binary_range(df[spec.treatment])
    if not values <= {0, 1}:  # bools and 0.0/1.0 compare equal
        shown = sorted(map(str, set(pd.unique(df[spec.treatment]))))[:5]
        raise DataValidationError(
            f"treatment column {spec.treatment!r} must be binary 0/1; found values {shown}"
        )
    if len(values) < 2:
        raise DataValidationError(
            f"treatment column {spec.treatment!r} has a single value; need treated and untreated rows"
        )
    if not pd.api.types.is_numeric_dtype(df[spec.outcome]):
        raise DataValidationError(f"outcome column {spec.outcome!r} must be numeric")
    if spec.id_column and df[spec.id_column].duplicated().any():
        raise DataValidationError(f"id column {spec.id_column!r} has duplicate values")
