"""The API's job catalog, resolved in a child process so the API never imports the definitions.

Resolving the catalog imports ``e2i_pipelines.definitions`` (every asset module, LightGBM,
scikit-learn, SciPy, numba, matplotlib: ~170 MiB of the process). ``python -m
e2i_api.catalog_snapshot`` does that and prints the resolved catalog as JSON; the API rebuilds
it from there with config classes by name, imported only when a request needs them (run
parameters, the jobs' schemas). ``python -m e2i_api`` resolves once for all its workers (file
named by ``E2I_API_CATALOG_SNAPSHOT``). A process that already holds the definitions resolves
in-process. The catalog modules are imported inside the functions: the uvicorn supervisor
imports this module and stays without Dagster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from e2i_pipelines.catalog import Catalog

DEFINITIONS = "e2i_pipelines.definitions"
SNAPSHOT_ENV = "E2I_API_CATALOG_SNAPSHOT"
TIMEOUT_S = 600


def to_json(catalog: Catalog) -> dict[str, Any]:
    """The catalog as JSON data (config classes as ``"module:Class"``)."""
    from e2i_pipelines.catalog import config_ref_of

    return {"jobs": [{"name": e.name, "description": e.description, "tier": e.tier.value,
                      "checks": list(e.checks),
                      "assets": [{"name": a.name, "op_name": a.op_name, "tier": a.tier.value,
                                  "config": None if a.config_ref is None else config_ref_of(a.config_ref)}
                                 for a in e.assets]}
                     for e in catalog]}


def from_json(data: dict[str, Any]) -> Catalog:
    """The catalog :func:`to_json` wrote."""
    from e2i_pipelines.catalog import Catalog, CatalogAsset, CatalogEntry
    from e2i_pipelines.tiers import Tier

    return Catalog([CatalogEntry(job["name"], job["description"], Tier(job["tier"]),
                                 tuple(CatalogAsset(a["name"], a["op_name"], Tier(a["tier"]), a["config"])
                                       for a in job["assets"]),
                                 tuple(job["checks"]))
                    for job in data["jobs"]])


def resolve_in_child() -> str:
    """The resolved catalog's JSON, from a child process that imports the definitions."""
    done = subprocess.run([sys.executable, "-m", __name__], capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"resolving the job catalog failed (exit {done.returncode}): {tail[0]}")
    return done.stdout


def write_snapshot(folder: Path) -> Path:
    """Resolve once into ``folder``/catalog.json and name it in ``E2I_API_CATALOG_SNAPSHOT`` for
    the workers this process starts."""
    path = folder / "catalog.json"
    path.write_text(resolve_in_child(), encoding="utf-8")
    os.environ[SNAPSHOT_ENV] = str(path)
    return path


def api_catalog() -> Catalog:
    """The launchable-job catalog without importing the definitions into this process."""
    from e2i_pipelines.catalog import load_catalog

    if DEFINITIONS in sys.modules:
        return load_catalog()
    snapshot = os.environ.get(SNAPSHOT_ENV)
    text = Path(snapshot).read_text(encoding="utf-8") if snapshot else resolve_in_child()
    return from_json(json.loads(text))


def main() -> None:
    from e2i_pipelines.catalog import load_catalog

    json.dump(to_json(load_catalog()), sys.stdout)


if __name__ == "__main__":
    main()
