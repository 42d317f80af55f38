"""The launchable-job catalog: which jobs the API may start and which parameters they accept.

An entry names a job of ``e2i_pipelines.definitions`` and the Dagster config class of each of
its assets that takes config, by ``"module:Class"`` (imported on first use, so a process that
only lists jobs or takes uploads never imports the analytics). Adding a job is one line in
``LAUNCHABLE``. The rest (the assets a
job runs, their op names, the job's tier) is read from the definitions, tiers via
``e2i_pipelines.tiers``: a job's tier is the largest tier over all its steps (assets and checks).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pydantic

from e2i_pipelines.core.data_root import DataScope
from e2i_pipelines.core.datasets import DATASET_TAG
from e2i_pipelines.tiers import Tier, max_tier, tier_of_tags

ConfigRef = type[dg.Config] | str
"""A config class, or its ``"module:Class"`` name (imported when first used)."""


def config_class_of(ref: ConfigRef) -> type[dg.Config]:
    """The config class ``ref`` names (itself when already a class)."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def config_ref_of(ref: ConfigRef) -> str:
    """``"module:Class"`` of a config class or reference."""
    return ref if isinstance(ref, str) else f"{ref.__module__}:{ref.__qualname__}"


@dataclass(frozen=True)
class LaunchableJob:
    """One catalog line: job name, what it is for, and config classes by asset name."""

    name: str
    description: str
    configs: Mapping[str, ConfigRef] = field(default_factory=dict)


_DEFS = "e2i_pipelines.defs"
ASSET_CONFIGS: dict[str, ConfigRef] = {
    "dataset": f"{_DEFS}.data.config:DatasetConfig",
    "feature_store": f"{_DEFS}.features.config:FeatureStoreConfig",
    "outcome_model": f"{_DEFS}.models.config:OutcomeModelConfig",
    "shap_explanations": f"{_DEFS}.explain.config:ShapConfig",
    "shap_summary": f"{_DEFS}.explain.config:ShapSummaryConfig",
    "causal_estimate": f"{_DEFS}.causal.config:CausalEstimateConfig",
    "digital_twins": f"{_DEFS}.twins.config:DigitalTwinsConfig",
    "twin_interventions": f"{_DEFS}.twins.config:TwinInterventionsConfig",
}
"""Config class of every analytics asset that takes config."""
_PROBE_CONFIG = f"{_DEFS}.diagnostics.config:ProbeConfig"


def _configs(*assets: str) -> dict[str, ConfigRef]:
    return {name: ASSET_CONFIGS[name] for name in assets}


_MODEL_CHAIN = ("dataset", "feature_store", "outcome_model")

LAUNCHABLE: tuple[LaunchableJob, ...] = (
    LaunchableJob("shap_job", "Exact SHAP explanations of the outcome model.",
                  _configs(*_MODEL_CHAIN, "shap_explanations", "shap_summary")),
    LaunchableJob("causal_job", "Causal estimate (ATE/ATT/ATC; regression, weighting, AIPW, DML) "
                  "with CATE, balance/overlap/sensitivity and five refutation checks.",
                  _configs("dataset", "causal_estimate")),
    LaunchableJob("twins_job", "Digital twins and simulated interventions.",
                  _configs(*_MODEL_CHAIN, "digital_twins", "twin_interventions")),
    LaunchableJob("feature_refresh_job", "Refresh dataset, Feast features and the outcome model.",
                  _configs(*_MODEL_CHAIN)),
    LaunchableJob("e2i_main_job", "Everything: features, model, SHAP, causal, twins.",
                  dict(ASSET_CONFIGS)),
    LaunchableJob("probe_light_job", "Allocate and hold memory at the light tier (diagnostics).", {"probe_light": _PROBE_CONFIG}),
    LaunchableJob("probe_medium_job", "Allocate and hold memory at the medium tier (diagnostics).", {"probe_medium": _PROBE_CONFIG}),
    LaunchableJob("probe_heavy_job", "Allocate and hold memory at the heavy tier (diagnostics).", {"probe_heavy": _PROBE_CONFIG}),
)
"""Jobs the API may launch. Add analytics jobs here, one line each."""


class CatalogError(ValueError):
    """The catalog does not match the definitions (unknown job, asset not in the job)."""


class UnknownJobError(KeyError):
    """A job name that is not in the catalog."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown job {self.name!r}: launchable jobs are {', '.join(self.known)}"


class ParamsValidationError(ValueError):
    """Parameters rejected by the config classes; ``errors`` are pydantic-style dicts."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def _check_problem(model: dg.Config) -> str | None:
    """The message of the config's own ``check()`` (cross-field rules), None when it passes.

    Every analytics config class exposes ``check()`` raising ``dg.Failure`` naming the fields;
    the assets call it at step start, the API before it launches anything.
    """
    check = getattr(model, "check", None)
    if check is None:
        return None
    try:
        check()
    except dg.Failure as exc:
        return exc.description or str(exc)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class CatalogAsset:
    """An asset run by a catalog job: key, the op that computes it, tier and config class."""

    name: str
    op_name: str
    tier: Tier
    config_ref: ConfigRef | None

    @property
    def config_class(self) -> type[dg.Config] | None:
        return None if self.config_ref is None else config_class_of(self.config_ref)


@dataclass(frozen=True)
class CatalogEntry:
    """A launchable job resolved against the definitions."""

    name: str
    description: str
    tier: Tier
    assets: tuple[CatalogAsset, ...]
    checks: tuple[str, ...]

    @property
    def configurable(self) -> dict[str, CatalogAsset]:
        return {a.name: a for a in self.assets if a.config_ref is not None}

    def params_schema(self) -> dict[str, Any]:
        """JSON schema of ``params``: one object per configurable asset, keyed by asset name."""
        properties = {}
        for name, asset in self.configurable.items():
            schema = asset.config_class.model_json_schema()
            schema["additionalProperties"] = False
            properties[name] = schema
        return {"type": "object", "properties": properties, "additionalProperties": False}

    def validate_params(self, params: Mapping[str, Any] | None,
                        data_scope: DataScope | None = None) -> dict[str, dict[str, Any]]:
        """Validate ``params`` (asset name -> config dict); return the explicitly set values.

        Raises ParamsValidationError listing every problem with its location
        (``(asset, field)``); absent assets are validated as ``{}`` so required fields are named.
        ``data_scope`` (the API's caller) confines file paths to its data folder: the fields a
        config sets from it (``SERVER_SET``) are refused in ``params`` and set in the result.
        """
        params = dict(params or {})
        errors: list[dict[str, Any]] = []
        configurable = self.configurable
        for name in params:
            if name not in configurable:
                allowed = ", ".join(configurable) or "none"
                errors.append({"loc": (name,), "type": "unknown_asset",
                               "msg": f"job {self.name} has no configurable asset {name!r} (configurable: {allowed})"})
        validated: dict[str, dict[str, Any]] = {}
        for name, asset in configurable.items():
            raw = params.get(name, {})
            if not isinstance(raw, Mapping):
                errors.append({"loc": (name,), "type": "dict_type", "msg": "must be an object"})
                continue
            fields = asset.config_class.model_fields
            known = {f.alias or key for key, f in fields.items()} | set(fields)
            errors += [{"loc": (name, key), "type": "extra_forbidden",
                        "msg": f"unknown parameter; {asset.config_class.__name__} accepts {', '.join(sorted(fields))}"}
                       for key in raw if key not in known]
            server_set = set(getattr(asset.config_class, "SERVER_SET", ())) if data_scope else set()
            errors += [{"loc": (name, key), "type": "server_set",
                        "msg": "set by the server from the API key; remove it"}
                       for key in raw if key in server_set]
            try:
                model = asset.config_class.model_validate(dict(raw))
                if server_set:
                    model = model.with_scope(data_scope)
            except pydantic.ValidationError as exc:
                errors += [{"loc": (name, *e["loc"]), "type": e["type"], "msg": e["msg"]}
                           for e in exc.errors(include_url=False, include_context=False)]
                continue
            except ValueError as exc:  # a client name that cannot be a data folder
                errors.append({"loc": (name,), "type": "value_error", "msg": str(exc)})
                continue
            problem = _check_problem(model)
            if problem:
                errors.append({"loc": (name,), "type": "value_error", "msg": problem})
                continue
            scoped = {k for k in server_set if getattr(model, k) != fields[k].default}
            validated[name] = model.model_dump(mode="json", include=(set(raw) & set(fields)) | scoped)
        if errors:
            raise ParamsValidationError(errors)
        return validated

    def run_tags(self, validated: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """Tags of a run on validated params: the dataset id it reads (``e2i/dataset``), which
        keeps the dataset from being deleted while the run is queued or running."""
        dataset_id = validated.get("dataset", {}).get("id")
        return {DATASET_TAG: dataset_id} if dataset_id else {}

    def run_config(self, validated: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Dagster run config for validated params: ``{"ops": {op: {"config": ...}}}``."""
        by_name = {a.name: a for a in self.assets}
        ops = {by_name[name].op_name: {"config": dict(values)} for name, values in validated.items()}
        return {"ops": ops} if ops else {}


class Catalog:
    """Launchable jobs by name."""

    def __init__(self, entries: list[CatalogEntry]) -> None:
        self._entries = {e.name: e for e in entries}

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> CatalogEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownJobError(name, sorted(self._entries)) from None


def _tier_of_node(node_def: Any) -> Tier:
    return tier_of_tags(node_def.tags) or Tier.LIGHT


def resolve_entry(defs: dg.Definitions, job: LaunchableJob) -> CatalogEntry:
    """Resolve one catalog line against ``defs``; raise CatalogError when it does not match."""
    try:
        job_def = defs.resolve_job_def(job.name)
    except Exception as exc:  # noqa: BLE001 - Dagster raises several types for a missing job
        raise CatalogError(f"catalog job {job.name!r} is not defined: {exc}") from None
    graph = defs.resolve_asset_graph()
    assets = []
    for key in sorted(job_def.asset_layer.selected_asset_keys, key=lambda k: k.to_user_string()):
        node_def = graph.assets_def_for_key(key).node_def
        assets.append(CatalogAsset(key.to_user_string(), node_def.name, _tier_of_node(node_def),
                                   job.configs.get(key.to_user_string())))
    names = {a.name for a in assets}
    missing = [name for name in job.configs if name not in names]
    if missing:
        raise CatalogError(f"catalog job {job.name!r} configures {missing} which it does not run "
                           f"(it runs {sorted(names)})")
    checks = tuple(sorted(k.to_user_string() for k in job_def.asset_layer.asset_graph.asset_check_keys))
    tier = max_tier(_tier_of_node(n) for n in job_def.all_node_defs)
    description = job.description or job_def.description or ""
    return CatalogEntry(job.name, description, tier, tuple(assets), checks)


def build_catalog(defs: dg.Definitions, launchable: tuple[LaunchableJob, ...] = LAUNCHABLE) -> Catalog:
    """The catalog of ``launchable`` resolved against ``defs``."""
    return Catalog([resolve_entry(defs, job) for job in launchable])


@functools.cache
def load_catalog() -> Catalog:
    """The catalog of the e2i code location (imports the definitions once)."""
    from e2i_pipelines.definitions import defs

    return build_catalog(defs)
