"""Run the main job on embedded defaults (SQLite instance, local MLflow + Feast) and summarise.

    python -m e2i_pipelines.quickstart [--rows N] [--twins N]

DAGSTER_HOME defaults to ./.e2i_home; the run shows up in ``dagster dev`` afterwards.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import yaml

EMBEDDED_INSTANCE = {
    "telemetry": {"enabled": False},
    "concurrency": {"pools": {"granularity": "run", "default_limit": 4}},
}


def ensure_home() -> Path:
    """DAGSTER_HOME (default ./.e2i_home) with a SQLite dagster.yaml if none exists."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".e2i_home"))).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(EMBEDDED_INSTANCE, sort_keys=False))
    return home


def main_run_config(rows: int, twins: int) -> dict:
    """Run config of e2i_main_job for the demo sizes."""
    ops: dict = {"dataset": {"config": {"source": "synthetic", "n_rows": rows}}}
    from e2i_pipelines.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    if "digital_twins" in keys:
        ops["digital_twins"] = {"config": {"n_twins": twins}}
    return {"ops": ops}


def _scalar(value) -> str | None:
    raw = getattr(value, "value", getattr(value, "text", None))
    if isinstance(raw, float):
        return f"{raw:.4g}"
    if isinstance(raw, (int, str)) and len(str(raw)) < 60:
        return str(raw)
    return None


def summarise(result) -> list[str]:
    """One line per materialized asset / check with its scalar metadata."""
    lines = []
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        shown = {k: _scalar(v) for k, v in mat.metadata.items()}
        shown = {k: v for k, v in shown.items() if v is not None and k != "path"}
        lines.append(f"  {mat.asset_key.to_user_string():<20} " +
                     ", ".join(f"{k}={v}" for k, v in list(shown.items())[:6]))
    for event in result.get_asset_check_evaluations():
        verdict = "PASS" if event.passed else "FAIL"
        lines.append(f"  check {event.check_name:<26} {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic dataset rows")
    parser.add_argument("--twins", type=int, default=1_000_000, help="digital twins to sample")
    args = parser.parse_args()
    home = ensure_home()

    import dagster as dg

    from e2i_pipelines.definitions import defs

    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        job = defs.resolve_job_def("e2i_main_job")
        result = job.execute_in_process(
            run_config=main_run_config(args.rows, args.twins), instance=instance,
            tags={"e2i/trigger": "quickstart"},
        )
    elapsed = time.perf_counter() - started
    print(f"\ne2i main job {'succeeded' if result.success else 'FAILED'} in {elapsed:.0f}s "
          f"(run {result.run_id})")
    print("\n".join(summarise(result)))
    print(f"\nInstance: {home} (SQLite); data, MLflow and Feast under {home / 'e2i_data'}")
    print(f"Open the UI:  DAGSTER_HOME={home} dagster dev -w workspace.yaml  "
          "-> http://127.0.0.1:3000")
    if not result.success:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
