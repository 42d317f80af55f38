"""Scaler settings: load the scaler YAML and validate it (bad values raise naming the key).

File path: ``$E2I_SCALER_CONFIG`` or the packaged ``scaler.yaml``. Keys::

    min_heavy_runs: 0          # heavy runs always allowed (0: nothing reserved while idle)
    max_heavy_runs: 4          # never more heavy runs at once
    interval_seconds: 30       # sensor interval
    capacity:                  # optional
      source: auto             # auto | docker | ray | host (auto: the launcher's engine)
      cpus: 8                  # optional override of the measured total CPUs
      memory: 32g              # optional override of the measured total memory
      reserve:                 # optional: what a compose service (not a run) takes, instead
        postgres: {cpus: 0.5, memory: 1g}   # of its measured use (docker stats); either key
    heavy_profile:             # optional override of what one heavy run needs
      cpus: 16
      memory: 32g
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2i_pipelines.tiers import parse_bytes

CONFIG_ENV = "E2I_SCALER_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).with_name("scaler.yaml")
CAPACITY_SOURCES = ("auto", "docker", "ray", "host")

_TOP_KEYS = ("min_heavy_runs", "max_heavy_runs", "interval_seconds", "capacity", "heavy_profile")
_CAPACITY_KEYS = ("source", "cpus", "memory", "reserve")
_PROFILE_KEYS = ("cpus", "memory")


class ScalerConfigError(ValueError):
    """Invalid scaler configuration; the message names the file and the key."""


@dataclass(frozen=True)
class ResourceOverride:
    """CPU and/or memory values set in the config (None: not overridden)."""

    cpus: float | None = None
    memory_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "memory_bytes": self.memory_bytes}


@dataclass(frozen=True)
class ScalerConfig:
    """Validated scaler settings."""

    min_heavy_runs: int = 0
    max_heavy_runs: int = 4
    interval_seconds: int = 30
    capacity_source: str = "auto"
    capacity: ResourceOverride = field(default_factory=ResourceOverride)
    heavy_profile: ResourceOverride = field(default_factory=ResourceOverride)
    path: str | None = None
    reserve: dict[str, ResourceOverride] = field(default_factory=dict)
    """Compose service -> what it takes (Docker capacity), instead of its measured use."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "min_heavy_runs": self.min_heavy_runs,
            "max_heavy_runs": self.max_heavy_runs,
            "interval_seconds": self.interval_seconds,
            "capacity_source": self.capacity_source,
            "capacity_override": self.capacity.as_dict(),
            "heavy_profile_override": self.heavy_profile.as_dict(),
            "reserve": {name: r.as_dict() for name, r in self.reserve.items()},
            "path": self.path,
        }


def config_path() -> Path:
    """The scaler config file in use: ``$E2I_SCALER_CONFIG`` or the packaged default."""
    return Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else DEFAULT_CONFIG_PATH


def load_config(path: str | Path | None = None) -> ScalerConfig:
    """Read and validate the scaler YAML at ``path`` (default: :func:`config_path`)."""
    path = Path(path) if path is not None else config_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScalerConfigError(f"cannot read scaler config {path} ({CONFIG_ENV}): {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScalerConfigError(f"scaler config {path} is not valid YAML: {exc}") from None
    return parse_config(data, source=str(path))


def parse_config(data: Mapping[str, Any] | None, source: str = "<scaler config>") -> ScalerConfig:
    """Validate a parsed config mapping (None/empty: all defaults)."""
    data = {} if data is None else data
    _check_mapping(data, "", source)
    _check_keys(data, _TOP_KEYS, "", source)
    min_runs = _int(data, "min_heavy_runs", 0, source, minimum=0)
    max_runs = _int(data, "max_heavy_runs", 4, source, minimum=0)
    if max_runs < min_runs:
        raise ScalerConfigError(
            f"{source}: max_heavy_runs ({max_runs}) is less than min_heavy_runs ({min_runs})"
        )
    interval = _int(data, "interval_seconds", 30, source, minimum=1)

    capacity = data.get("capacity") or {}
    _check_mapping(capacity, "capacity", source)
    _check_keys(capacity, _CAPACITY_KEYS, "capacity.", source)
    cap_source = capacity.get("source", "auto")
    if cap_source not in CAPACITY_SOURCES:
        raise ScalerConfigError(
            f"{source}: capacity.source is {cap_source!r}; expected one of {', '.join(CAPACITY_SOURCES)}"
        )
    profile = data.get("heavy_profile") or {}
    _check_mapping(profile, "heavy_profile", source)
    _check_keys(profile, _PROFILE_KEYS, "heavy_profile.", source)
    return ScalerConfig(
        min_heavy_runs=min_runs,
        max_heavy_runs=max_runs,
        interval_seconds=interval,
        capacity_source=cap_source,
        capacity=_override(capacity, "capacity.", source),
        heavy_profile=_override(profile, "heavy_profile.", source),
        path=source,
        reserve=_reserve(capacity.get("reserve") or {}, source),
    )


def _reserve(data: Any, source: str) -> dict[str, ResourceOverride]:
    """``capacity.reserve``: service name -> {cpus, memory} (at least one of them)."""
    _check_mapping(data, "capacity.reserve", source)
    reserve = {}
    for name, values in data.items():
        prefix = f"capacity.reserve.{name}."
        _check_mapping(values, prefix[:-1], source)
        _check_keys(values, _PROFILE_KEYS, prefix, source)
        if not values:
            raise ScalerConfigError(f"{source}: {prefix[:-1]} needs cpus and/or memory")
        reserve[str(name)] = _override(values, prefix, source)
    return reserve


def _check_mapping(value: Any, key: str, source: str) -> None:
    if not isinstance(value, Mapping):
        where = key or "the top level"
        raise ScalerConfigError(f"{source}: {where} must be a mapping, got {type(value).__name__}")


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], prefix: str, source: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ScalerConfigError(
            f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"allowed: {', '.join(prefix + k for k in allowed)}"
        )


def _int(data: Mapping[str, Any], key: str, default: int, source: str, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScalerConfigError(f"{source}: {key} must be an integer, got {value!r}")
    if value < minimum:
        raise ScalerConfigError(f"{source}: {key} must be >= {minimum}, got {value}")
    return value


def _override(data: Mapping[str, Any], prefix: str, source: str) -> ResourceOverride:
    cpus = data.get("cpus")
    if cpus is not None:
        if isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0:
            raise ScalerConfigError(f"{source}: {prefix}cpus must be a positive number, got {cpus!r}")
        cpus = float(cpus)
    memory = data.get("memory")
    if memory is not None:
        try:
            memory = parse_bytes(memory)
        except ValueError as exc:
            raise ScalerConfigError(f"{source}: {prefix}memory: {exc}") from None
        if memory <= 0:
            raise ScalerConfigError(f"{source}: {prefix}memory must be positive, got {data['memory']!r}")
    return ResourceOverride(cpus=cpus, memory_bytes=memory)
