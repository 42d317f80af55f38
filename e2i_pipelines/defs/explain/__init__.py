"""SHAP explanations of the outcome model: exact, chunked TreeSHAP assets."""
