"""Secrets from the environment or from Docker secret files (e2i_pipelines.core.secrets)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from e2i_pipelines.core.secrets import export_file_secrets, read_secret


def test_read_secret_prefers_the_variable_then_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.delenv("E2I_TEST_PW", raising=False)
    monkeypatch.delenv("E2I_TEST_PW_FILE", raising=False)
    assert read_secret("E2I_TEST_PW") is None
    monkeypatch.setenv("E2I_TEST_PW_FILE", str(secret))
    assert read_secret("E2I_TEST_PW") == "from-file"
    monkeypatch.setenv("E2I_TEST_PW", "from-env")
    assert read_secret("E2I_TEST_PW") == "from-env"


def test_a_missing_secret_file_names_the_variable_not_the_content(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2I_TEST_PW", raising=False)
    monkeypatch.setenv("E2I_TEST_PW_FILE", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="E2I_TEST_PW_FILE: cannot read the secret file"):
        read_secret("E2I_TEST_PW")


def test_export_sets_only_unset_names_from_files_under_the_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("alpha\n")
    (tmp_path / "b").write_text("beta")
    env = {"A_FILE": str(tmp_path / "a"), "B_FILE": str(tmp_path / "b"), "B": "kept",
           "PIP_CONFIG_FILE": "/etc/pip.conf", "_FILE": str(tmp_path / "a")}
    assert export_file_secrets(env, secrets_dir=str(tmp_path)) == ["A"]
    assert env["A"] == "alpha" and env["B"] == "kept" and "PIP_CONFIG" not in env


def test_the_command_exports_then_execs(tmp_path: Path) -> None:
    # The command form only trusts /run/secrets; a missing one is an error naming the variable.
    result = subprocess.run([sys.executable, "-m", "e2i_pipelines.core.secrets", "sh", "-c", "echo ${X:-unset}"],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "X_FILE": "/run/secrets/e2i-test-missing"})
    assert result.returncode == 1 and "X_FILE: cannot read the secret file" in result.stderr
    ok = subprocess.run([sys.executable, "-m", "e2i_pipelines.core.secrets", "sh", "-c", "echo ${X:-unset}"],
                        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert ok.returncode == 0 and ok.stdout.strip() == "unset"
    usage = subprocess.run([sys.executable, "-m", "e2i_pipelines.core.secrets"], capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2
