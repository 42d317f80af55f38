"""A panel run from the command line, as a user starts one: ``dagster job execute -c`` with the
panel keys inline in the dataset config (no spec file); a bad key is named and nothing is
written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.panel.generated import staggered

CONFIG = {"source": "file", "path": "panel.csv", "design": "panel", "unit": "unit",
          "time": "time", "treatment": "d", "outcome": "y", "covariates": ["x"],
          "control_group": "not_yet_treated"}


def _execute(tmp_path: Path, dataset: dict) -> subprocess.CompletedProcess:
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"ops": {
        "dataset": {"config": dataset},
        "causal_estimate": {"config": {"n_bootstrap": 199}}}}))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("")
    out = str(tmp_path / "out")
    env = {**os.environ, "DAGSTER_HOME": str(home), "E2I_DATA_ROOT": str(tmp_path),
           "E2I_DATA_DIR": out, "E2I_STORAGE_URL": out,
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    dagster = [sys.executable, "-m", "dagster"]
    return subprocess.run([*dagster, "job", "execute", "-m", "e2i_pipelines.definitions",
                           "-j", "causal_job", "-c", str(tmp_path / "run.yaml")],
                          env=env, capture_output=True, text=True, timeout=900, check=False)


def test_inline_panel_keys_from_the_command_line(tmp_path):
    truth = staggered(n_units=300, n_periods=6, cohorts=(3, 5), seed=3)
    truth.df.drop(columns=["g", "cluster"]).to_csv(tmp_path / "panel.csv", index=False)
    done = _execute(tmp_path, CONFIG)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "panel checked for callaway_santanna: 300 units x 6 periods" in log
    (saved,) = (tmp_path / "out").rglob("panel_estimate.json")
    summary = json.loads(saved.read_text())
    assert summary["ci_low"] <= truth.true_att <= summary["ci_high"]

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "panel.csv").write_bytes((tmp_path / "panel.csv").read_bytes())
    bad = _execute(bad_dir, {**CONFIG, "control_group": "sometimes"})
    assert bad.returncode != 0
    assert "spec key 'control_group' is 'sometimes'" in bad.stdout + bad.stderr
    assert not [p for p in (bad_dir / "out").rglob("*") if p.is_file() and
                p.suffix in (".parquet", ".json")]
