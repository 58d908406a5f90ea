"""Fixtures every tier shares: the real servers the suite starts itself, and the optional shared ones.

Redis-backed tests run on an embedded Valkey (always) and on the Redis 7 named by ``TEST_REDIS_URL``
(default: the machine's 127.0.0.1:6379, skipped with a reason when it does not answer). SQL-backed
tests run on SQLite (always) and on the PostgreSQL named by ``TEST_POSTGRES_URL`` likewise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from paperwire.stack import start_valkey, valkey_url

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
TEST_POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repo: test data we were given (never needed by the product)."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} (test data beside the repo) is missing")
    return SHARED


@pytest.fixture(scope="session")
def embedded_valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_valkey(tmp_path_factory.mktemp("valkey"))
    yield valkey_url(server)
    server.stop()


@pytest.fixture(params=["valkey", "redis7"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """An empty Redis-compatible server: embedded Valkey, then the machine's Redis 7."""
    if request.param == "valkey":
        url = request.getfixturevalue("embedded_valkey_url")
    else:
        url = TEST_REDIS_URL
    client = redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {url} (set TEST_REDIS_URL)")
    client.flushdb()
    client.close()
    return url


def _postgres_database() -> Iterator[str]:
    admin = sa.create_engine(TEST_POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = f"paperwire_test_{uuid.uuid4().hex[:12]}"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError:
        admin.dispose()
        pytest.skip(f"no PostgreSQL at {TEST_POSTGRES_URL} (set TEST_POSTGRES_URL)")
    url = sa.engine.make_url(TEST_POSTGRES_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty SQL database: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'paperwire.db'}"
    else:
        yield from _postgres_database()
