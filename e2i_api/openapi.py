"""OpenAPI document with the exact POST /v1/runs body: one variant per catalog job.

The request model (``RunCreate``) accepts any ``params`` object and the catalog validates it per
job; the published schema instead spells out, per job, which assets take which config (from the
Dagster config classes) and the tag rules, so clients and fuzzers see what is really accepted.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from e2i_api.models import TAG_KEY_PATTERN
from e2i_pipelines.catalog import Catalog, CatalogEntry

REF_TEMPLATE = "#/components/schemas/{model}"


def tags_schema() -> dict[str, Any]:
    return {
        "type": "object", "maxProperties": 20,
        "description": "run tags; only keys under the `client/` prefix are accepted (e.g. `client/team`); "
                       "any other key is refused with 422",
        "propertyNames": {"pattern": TAG_KEY_PATTERN.pattern},
        "additionalProperties": {"type": "string", "maxLength": 1000, "pattern": "^[^\\x00]*$"},
    }


def job_body_schema(entry: CatalogEntry, components: dict[str, Any]) -> dict[str, Any]:
    """Body schema for one job; nested config models are hoisted into ``components``."""
    properties = {}
    for name, asset in entry.configurable.items():
        schema = asset.config_class.model_json_schema(ref_template=REF_TEMPLATE)
        components.update(schema.pop("$defs", {}))
        properties[name] = {**schema, "additionalProperties": False}
    params = {"type": "object", "properties": properties, "additionalProperties": False}
    return {
        "type": "object", "title": f"RunCreate[{entry.name}]", "required": ["job"], "additionalProperties": False,
        "properties": {"job": {"type": "string", "const": entry.name, "enum": [entry.name]},
                       "params": params, "tags": tags_schema()},
    }


def install_openapi(app: FastAPI, catalog: Catalog) -> None:
    """Replace ``app.openapi`` with a generator that publishes per-job POST /v1/runs bodies."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
        components = document.setdefault("components", {}).setdefault("schemas", {})
        variants = [job_body_schema(entry, components) for entry in catalog]
        base = components["RunCreate"]
        components["RunCreate"] = {"title": "RunCreate", "description": base.get("description", ""),
                                   "oneOf": variants, **({"examples": base["examples"]} if "examples" in base else {})}
        app.openapi_schema = document
        return document

    app.openapi = openapi
