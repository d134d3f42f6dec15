"""The session's PostgreSQL cluster (tests/support/postgres.py) the Prefect server tiers run on."""

from __future__ import annotations

import pytest
from support import postgres


def test_a_database_is_fresh_and_reachable_with_its_url_credentials(prefect_database):
    db = prefect_database("support_check")
    assert db.url.startswith("postgresql+asyncpg://prefect:")
    assert f"@127.0.0.1:{db.cluster.port}/support_check" in db.url
    db.query("create table t (n int); insert into t values (1), (2)")
    assert db.scalar("select sum(n) from t") == "3"
    # listens on loopback only, with password (scram) auth over TCP, as Prefect connects
    assert db.scalar("show listen_addresses") == "127.0.0.1"
    assert db.scalar("show password_encryption") == "scram-sha-256"
    with pytest.raises(ValueError):
        prefect_database("support_check")  # one database per server: never shared


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_postgres_fails_under_ci_and_skips_elsewhere(monkeypatch, ci):
    monkeypatch.setattr(postgres, "find_bindir", lambda: None)
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="apt-get install -y postgresql"):
        postgres.require_bindir()
