"""Run costs: the cost-recording sensor and the daily ``run_costs`` report."""
