"""The causal spec of a dataset (treatment, outcome, covariates) and its validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml


class DataValidationError(ValueError):
    """The data or the spec cannot be used; the message names the column and the problem."""


@dataclass(frozen=True)
class CausalSpec:
    """Which columns play which role. ``id_column`` None means rows get a synthetic id."""

    treatment: str
    outcome: str
    common_causes: list[str]
    effect_modifiers: list[str] = field(default_factory=list)
    id_column: str | None = None

    @property
    def covariates(self) -> list[str]:
        """Common causes then effect modifiers, without repeats."""
        return list(dict.fromkeys([*self.common_causes, *self.effect_modifiers]))

    @property
    def required_columns(self) -> list[str]:
        return [self.treatment, self.outcome, *self.covariates]

    def check_roles(self) -> None:
        """Raise when a column plays two incompatible roles or a role is empty."""
        if not self.treatment or not self.outcome:
            raise DataValidationError("spec needs both 'treatment' and 'outcome'")
        if self.treatment == self.outcome:
            raise DataValidationError(f"column {self.treatment!r} is both treatment and outcome")
        for col in self.covariates:
            if col in (self.treatment, self.outcome):
                raise DataValidationError(
                    f"column {col!r} is listed as a covariate and as treatment/outcome"
                )
        if not self.common_causes:
            raise DataValidationError("spec needs at least one common cause (confounder)")


_SPEC_KEYS = {"treatment", "outcome", "common_causes", "effect_modifiers", "id_column"}


def load_spec_yaml(path: str | Path) -> CausalSpec:
    """Read a spec YAML file; unknown keys and missing required keys are errors."""
    p = Path(path)
    if not p.is_file():
        raise DataValidationError(f"spec file {str(p)!r} does not exist")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise DataValidationError(f"spec file {str(p)!r} must hold a mapping")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise DataValidationError(
            f"spec file {str(p)!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}"
        )
    missing = {"treatment", "outcome", "common_causes"} - set(raw)
    if missing:
        raise DataValidationError(f"spec file {str(p)!r} is missing {sorted(missing)}")
    return CausalSpec(
        treatment=raw["treatment"],
        outcome=raw["outcome"],
        common_causes=list(raw["common_causes"] or []),
        effect_modifiers=list(raw.get("effect_modifiers") or []),
        id_column=raw.get("id_column"),
    )


def validate_frame(df: pd.DataFrame, spec: CausalSpec, *, source: str = "data") -> None:
    """Check ``df`` against ``spec`` before any heavy work; raise naming column and problem."""
    spec.check_roles()
    if df.empty:
        raise DataValidationError(f"{source} is empty (no rows)")
    wanted = spec.required_columns + ([spec.id_column] if spec.id_column else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source} has no column(s) {missing}; available: {list(df.columns)}"
        )
    for col in spec.required_columns:
        n_null = int(df[col].isna().sum())
        if n_null:
            raise DataValidationError(f"column {col!r} has {n_null} missing (NaN) values")
    values = set(pd.unique(df[spec.treatment]))
    if not values <= {0, 1}:  # bools and 0.0/1.0 compare equal
        shown = sorted(map(str, values))[:5]
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
