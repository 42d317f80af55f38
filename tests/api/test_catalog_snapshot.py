"""The API resolves its catalog in a child process and keeps the analytics out of its own."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg

from e2i_api.catalog_snapshot import from_json, to_json
from e2i_pipelines.catalog import ASSET_CONFIGS, config_class_of, load_catalog

HEAVY = ("e2i_pipelines.definitions", "scipy", "numba", "matplotlib", "lightgbm", "sklearn", "pandas")


def test_every_config_reference_names_a_dagster_config_class() -> None:
    for asset, ref in ASSET_CONFIGS.items():
        assert issubclass(config_class_of(ref), dg.Config), asset


def test_the_snapshot_rebuilds_the_same_catalog() -> None:
    catalog = load_catalog()
    rebuilt = from_json(json.loads(json.dumps(to_json(catalog))))
    assert [e.name for e in rebuilt] == [e.name for e in catalog]
    for entry in catalog:
        again = rebuilt.get(entry.name)
        assert (again.tier, again.checks, again.description) == (entry.tier, entry.checks, entry.description)
        assert [(a.name, a.op_name, a.tier, a.config_class) for a in again.assets] == \
               [(a.name, a.op_name, a.tier, a.config_class) for a in entry.assets]
        assert again.params_schema() == entry.params_schema()
    params = {"causal_estimate": {"method": "linear_regression"}}
    assert rebuilt.get("causal_job").validate_params(params) == catalog.get("causal_job").validate_params(params)


def test_the_api_process_does_not_import_the_analytics() -> None:
    """create_app() with the default catalog: the definitions, SciPy, numba, matplotlib,
    LightGBM and pandas stay out of the process until a request needs a config class."""
    probe = ("import json, sys\n"
             "from e2i_api.main import create_app\n"
             "app = create_app()\n"
             "loaded = [m for m in " + repr(HEAVY) + " if m in sys.modules]\n"
             "app.state.catalog.get('causal_job').validate_params({})\n"
             "print(json.dumps({'start': loaded, 'jobs': len(app.state.catalog),\n"
             "                  'after': 'e2i_pipelines.defs.causal.config' in sys.modules}))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"start": [], "jobs": len(load_catalog()), "after": True}


def test_validating_every_jobs_params_keeps_the_kernels_out() -> None:
    """Run parameters are checked from plain settings modules: validating every catalog job's
    parameters (as POST /v1/runs does) imports no SciPy, numba, matplotlib, LightGBM or
    scikit-learn, and not the definitions (pandas may load: dataset configs read frames)."""
    probe = ("import json, sys\n"
             "from e2i_api.main import create_app\n"
             "from e2i_pipelines.catalog import ParamsValidationError\n"
             "app = create_app()\n"
             "for entry in app.state.catalog:\n"
             "    try:\n"
             "        entry.validate_params({})\n"
             "    except ParamsValidationError:\n"
             "        pass\n"
             "    [a.config_class for a in entry.assets if a.config_ref]\n"
             "print(json.dumps([m for m in " + repr(HEAVY) + " if m in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) in ([], ["pandas"])
