"""Settings, security and logging of the API."""
