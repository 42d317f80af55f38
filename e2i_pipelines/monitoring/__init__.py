"""Platform metrics and run costs: price table, run cost, Prometheus exporter."""
