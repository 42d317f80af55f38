"""Names a SHAP run config checks (plain data: the API validates without the kernels)."""

METHODS: tuple[str, ...] = ("fast", "lightgbm")
"""TreeSHAP implementations: ours, or LightGBM's own ``pred_contrib``."""
PERTURBATIONS: tuple[str, ...] = ("tree_path_dependent", "interventional")
BACKGROUND_SOURCES: tuple[str, ...] = ("population", "control")
"""Where interventional SHAP draws its background rows."""
