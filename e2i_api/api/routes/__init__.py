"""One module per resource: health, jobs, runs."""
