from tests.api.conftest import down_client  # noqa: F401 - an API whose Dagster is down
from tests.costs.conftest import pg_instance  # noqa: F401 - the same real Postgres instance
