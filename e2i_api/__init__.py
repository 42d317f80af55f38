"""e2i_api: the HTTP service a frontend uses to start and follow e2i runs (via Dagster GraphQL)."""
