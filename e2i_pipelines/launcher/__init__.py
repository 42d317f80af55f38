"""Tiered Docker run launcher: one container per run, sized to the run's tier.

Modules: ``profiles`` (tier profiles from launcher config -> Docker limits), ``run_tier`` (a run's
tier from its execution plan / run tag), ``budget`` (thread-count env vars and ``n_jobs()``),
``oom`` (why a run container died), ``promotion`` (OOM -> next tier decision) and
``tiered_docker_run_launcher`` (the launcher class, which imports dagster-docker).
"""
