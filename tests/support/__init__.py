"""Real servers the tests start once per session (PostgreSQL for the Prefect servers)."""
