"""Where assets write their files: one root (E2I_DATA_DIR), one folder per asset and run.

Outputs are written into a hidden temporary folder and renamed into place only when complete,
so a failed or OOM-killed run never leaves a half-written result behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg


def default_data_dir() -> str:
    """E2I_DATA_DIR, else $DAGSTER_HOME/e2i_data, else ./.e2i_home/e2i_data."""
    if os.environ.get("E2I_DATA_DIR"):
        return os.environ["E2I_DATA_DIR"]
    home = os.environ.get("DAGSTER_HOME") or str(Path.cwd() / ".e2i_home")
    return str(Path(home) / "e2i_data")


class E2IStorage(dg.ConfigurableResource):
    """Root folder for datasets, models, attributions and twins."""

    root: str = ""

    @property
    def root_path(self) -> Path:
        return Path(self.root or default_data_dir())

    def output_dir(self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                   name: str | None = None) -> Path:
        """Final folder for this asset's output in this run (not created)."""
        key = name or context.asset_key.to_user_string().replace("/", "__")
        return self.root_path / key / context.run.run_id

    @contextmanager
    def atomic_output(self, final: Path) -> Iterator[Path]:
        """Yield a temp folder; on success it becomes ``final``, on error it is removed."""
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
