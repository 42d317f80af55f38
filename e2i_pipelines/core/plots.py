"""Figures as PNG files and as Dagster metadata the UI renders inline."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import dagster as dg
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def figure_png(fig: plt.Figure, path: str | Path | None = None, dpi: int = 110) -> bytes:
    """Render ``fig`` to PNG bytes (and to ``path`` when given); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


def png_metadata(png: bytes, title: str = "plot") -> dg.MetadataValue:
    """Inline PNG for asset metadata (rendered by the Dagster UI as markdown)."""
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
