"""Plots of refutation results: simulated effects against the estimate, one panel each."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from e2i_pipelines.analytics.causal.refuters import RefutationResult

_TITLES = {
    "placebo_treatment": "placebo treatment",
    "random_common_cause": "random common cause",
    "data_subset": "data subset",
    "bootstrap": "bootstrap",
    "unobserved_common_cause": "unobserved common cause (grid)",
}


def draw_panel(ax: plt.Axes, result: RefutationResult) -> None:
    """Histogram of the simulated effects with the estimate (and 0 for the placebo)."""
    colour = "#55A868" if result.passed else "#C44E52"
    if result.simulations is not None and result.simulations.size:
        ax.hist(result.simulations, bins=min(30, max(5, result.simulations.size // 4)),
                color=colour, alpha=0.75)
    else:  # DoWhy engine: only the mean effect is available
        ax.axvline(result.new_effect, color=colour, lw=2, label="mean new effect")
    ax.axvline(result.estimate, color="black", ls="--", lw=1.2, label="estimate")
    if result.name in ("placebo_treatment", "unobserved_common_cause"):
        ax.axvline(0.0, color="grey", ls=":", lw=1.2, label="0")
    p = f", p={result.p_value:.3f}" if result.p_value is not None else ""
    verdict = "pass" if result.passed else "FAIL"
    ax.set_title(f"{_TITLES.get(result.name, result.name)}: {verdict}{p}", fontsize=9)
    ax.set_xlabel("effect", fontsize=8)
    ax.tick_params(labelsize=7)


def refutation_figure(results: list[RefutationResult]) -> plt.Figure:
    """One panel per refuter."""
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 2.8), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        draw_panel(ax, result)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def panel_figure(result: RefutationResult) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4, 2.8))
    draw_panel(ax, result)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def simulated_summary(result: RefutationResult) -> dict[str, float]:
    """Quantiles of the simulated effects (empty for the DoWhy engine)."""
    if result.simulations is None or not result.simulations.size:
        return {}
    q = np.quantile(result.simulations, [0.025, 0.5, 0.975])
    return {"sim_q025": float(q[0]), "sim_median": float(q[1]), "sim_q975": float(q[2])}
