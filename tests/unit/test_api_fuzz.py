"""schemathesis fuzzes recommend's REST API from its OpenAPI schema: no 5xx, answers as documented.

The app runs in process (ASGI) with the admin key, the hashing stand-in encoder and real Qdrant
Edge + SQLite. A fixed seed and 25 examples per operation
keep the run repeatable and short.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)
from starlette.types import Receive, Scope, Send

from paperwire_recommend.store import Store
from paperwire_shared.vectors import QdrantEdgeStore
from tests.support.recommend import recommend_app

ADMIN_KEY = secrets.token_urlsafe(48)


def _app(data_dir: Path) -> FastAPI:
    return recommend_app(
        data_dir,
        store=Store(f"sqlite:///{data_dir / 'paperwire.db'}"),
        vectors=QdrantEdgeStore(data_dir / "qdrant"),
        api_key=ADMIN_KEY,
        # The fuzzer is one caller sending thousands of requests: the limit is not under test.
        rate_limit="1000000/minute",
    )


# Loaded eagerly: schemathesis 4.32's lazy loader (from_fixture) fails under pytest 9.2 (it reads
# a pytest-internal attribute that is gone). Nothing connects: the broker is never started (no
# lifespan), and
# no route the fuzzer reaches publishes (generated user ids name no user).
CASES: list[str] = []  # every request sent, for the figure the README quotes (run with -s)
DATA_DIR = Path(tempfile.mkdtemp(prefix="paperwire-fuzz-"))
APP = _app(DATA_DIR)


async def without_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """The app minus its lifespan (which starts the broker, on a Redis this test does not have)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await APP(scope, receive, send)


schema = schemathesis.openapi.from_asgi("/openapi.json", without_lifespan)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    print(f"\nschemathesis: {len(CASES)} requests over {len(set(CASES))} operations, no 5xx")
    APP.state.recommender.vectors.close()
    APP.state.store.close()
    shutil.rmtree(DATA_DIR, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_every_generated_request_without_5xx_and_as_documented(case) -> None:
    CASES.append(case.operation.label)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
