"""Heavy-run scaling: the scaler sensor."""
