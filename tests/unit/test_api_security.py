"""Who may call recommend's API, and the limits every request meets (issue 6, security)."""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from faststream.redis import RedisBroker, TestRedisBroker
from pydantic import ValidationError

from paperwire_recommend.auth import Caller, Credentials, api_key_for, client_headers
from paperwire_recommend.config import Settings
from paperwire_recommend.store import Store
from paperwire_shared.links import LinkSigner, is_placeholder
from paperwire_shared.vectors import QdrantEdgeStore
from tests.support.auth import bearer
from tests.support.recommend import asgi_client, recommend_app

ADMIN_KEY = secrets.token_urlsafe(48)
USER = {"interests": [{"name": "LLM", "text": "low-rank adapters"}]}

# The routes anyone may call: probes, metrics, the API's documentation, and the subscribe form.
PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/subscribe",
}
# The pages behind an email's links: the signed token in the path is the credential.
LINK_PAGES = re.compile(r"^/(manage|feedback|unsubscribe|feeds)/\{token\}")
# Routes for the admin key alone; every other /v1/users/{user_id} route is also the user's own.
ADMIN_ONLY = {("POST", "/v1/users"), ("GET", "/v1/users"), ("POST", "/v1/users/{user_id}/token")}
# Routes any valid credential may read (the papers): no one's data, so no "someone else".
ANY_CALLER = re.compile(r"^/v1/papers/")


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    admin: dict[str, str]


async def make_api(tmp_path: Path, **settings: object) -> AsyncIterator[Api]:
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    broker = RedisBroker()
    app = recommend_app(
        tmp_path, broker=broker, store=store, vectors=vectors, api_key=ADMIN_KEY, **settings
    )
    async with TestRedisBroker(broker), asgi_client(app) as client:
        yield Api(app, client, bearer(ADMIN_KEY))
    vectors.close()
    store.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async for made in make_api(tmp_path):
        yield made


async def create(api: Api, email: str) -> tuple[str, dict[str, str]]:
    response = await api.client.post("/v1/users", json={"email": email, **USER}, headers=api.admin)
    assert response.status_code == 201, response.text
    return response.json()["id"], bearer(response.json()["token"])


def routes(app: FastAPI) -> list[tuple[str, str]]:
    found = []
    for context in iter_route_contexts(app.routes):
        methods = getattr(context.original_route, "methods", None) or set()
        found += [(m, context.path) for m in sorted(methods - {"HEAD"})]
    return found


async def test_every_route_refuses_a_missing_credential_and_someone_elses(api: Api) -> None:
    ada, ada_token = await create(api, "ada@example.org")
    bob, bob_token = await create(api, "bob@example.org")
    forged = bearer(secrets.token_urlsafe(48))
    checked = 0
    for method, template in routes(api.app):
        if template in PUBLIC:
            continue
        path = template.replace("{user_id}", ada).replace("{paper_id:path}", "2501.00001")
        if LINK_PAGES.match(template):
            # A page behind a link answers a forged link with a refusal page, never the content.
            response = await api.client.request(method, path.replace("{token}", "forged"))
            assert 400 <= response.status_code < 500, (method, template)
            continue
        assert template.startswith("/v1/"), f"{method} {template} is neither public nor guarded"
        response = await api.client.request(method, path)
        assert response.status_code == 401, (method, template, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        forged_response = await api.client.request(method, path, headers=forged)
        assert forged_response.status_code == 401, (method, template)
        if (method, template) in ADMIN_ONLY:
            someone_else = ada_token  # a user's token is not the admin key
        elif ANY_CALLER.match(template):
            checked += 1
            continue
        else:
            assert "{user_id}" in template, f"{method} {template}: whose route is it?"
            someone_else = bob_token
        response = await api.client.request(method, path, headers=someone_else)
        assert response.status_code == 403, (method, template, response.text)
        checked += 1
    assert checked >= 18
    # The user's own token opens their routes (and the admin key everyone's).
    assert (await api.client.get(f"/v1/users/{ada}", headers=ada_token)).status_code == 200
    assert (await api.client.get(f"/v1/users/{bob}", headers=api.admin)).status_code == 200
    assert (await api.client.get("/v1/papers/search?q=x", headers=bob_token)).status_code == 200


async def test_a_user_token_names_the_user_by_id_never_by_address(api: Api) -> None:
    user_id, headers = await create(api, "ada.lovelace@example.org")
    token = headers["Authorization"].removeprefix("Bearer ")
    payload = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()

    assert json.loads(decoded)["u"] == user_id
    assert "ada" not in token.lower() and "example" not in decoded


async def test_the_admin_can_issue_a_token_and_it_dies_with_the_user(api: Api) -> None:
    user_id, _ = await create(api, "ada@example.org")
    issued = await api.client.post(f"/v1/users/{user_id}/token", headers=api.admin)
    token = bearer(issued.json()["token"])
    assert (await api.client.get(f"/v1/users/{user_id}", headers=token)).status_code == 200

    deleted = await api.client.delete(f"/v1/users/{user_id}", headers=token)

    assert deleted.status_code == 204
    assert (await api.client.get(f"/v1/users/{user_id}", headers=token)).status_code == 404


async def test_bodies_over_the_cap_are_refused_with_413_declared_or_streamed(api: Api) -> None:
    big = json.dumps({"email": "ada@example.org", **USER, "pad": "x" * 70_000}).encode()
    declared = await api.client.post("/v1/users", content=big, headers=api.admin)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = await api.client.post("/v1/users", content=chunks(), headers=api.admin)

    assert declared.status_code == 413 and "65536" in declared.json()["detail"]
    assert streamed.status_code == 413
    assert (await api.client.get("/v1/users", headers=api.admin)).json() == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/users/not%20an%20id", None),
        ("get", "/v1/users/" + "a" * 65, None),
        ("get", "/v1/papers/" + "9" * 201, None),
        ("get", "/v1/papers/search?q=" + "x" * 1001, None),
        ("get", "/v1/users?limit=100000", None),
        ("post", "/v1/users", {"email": "not an address", **USER}),
        ("post", "/v1/users", {"email": "a@b.org", "interests": [{"name": "x", "text": "y"}] * 21}),
        (
            "post",
            "/v1/users",
            {"email": "a@b.org", "interests": [{"name": "x", "text": "y" * 2001}]},
        ),
        ("post", "/v1/users", {"email": "a@b.org", **USER, "max_papers": 10**9}),
        ("post", "/v1/users", {"email": "a@b.org", **USER, "is_admin": True}),
    ],
)
async def test_invalid_input_gets_a_4xx_with_the_reason(
    api: Api, method: str, path: str, body: dict | None
) -> None:
    response = await api.client.request(method, path, json=body, headers=api.admin)

    assert response.status_code in (404, 422), response.text
    assert response.json()["detail"]


async def test_a_caller_over_the_rate_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    async for api in make_api(tmp_path, rate_limit="3/minute"):
        answers = [
            (await api.client.get("/v1/users", headers=api.admin)).status_code for _ in range(4)
        ]
        limited = await api.client.get("/v1/users", headers=api.admin)
        other = await api.client.get("/v1/papers/search?q=x", headers=bearer("someone else"))
        probe = await api.client.get("/healthz")

        assert answers == [200, 200, 200, 429]
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
        assert other.status_code == 401  # counted apart: keyed by credential
        assert probe.status_code == 200


@pytest.mark.parametrize(
    "key",
    [
        "changeme",
        "secret",
        "todo",
        "x" * 40,
        "<your-api-key>",
        "your-api-key-here-0123456789-please",
    ],
)
def test_settings_refuse_a_placeholder_api_key_outside_development(key: str) -> None:
    real_secret = secrets.token_urlsafe(48)
    with pytest.raises(ValidationError, match="PAPERWIRE_API_KEY"):
        Settings(
            redis_url="redis://x", environment="production", secret_key=real_secret, api_key=key
        )
    with pytest.raises(ValidationError, match="PAPERWIRE_API_KEY is required"):
        Settings(redis_url="redis://x", environment="production", secret_key=real_secret)
    Settings(
        redis_url="redis://x", environment="production", secret_key=real_secret, api_key=ADMIN_KEY
    )
    Settings(redis_url="redis://x", api_key=key)  # development takes anything


def test_generated_keys_are_never_taken_for_placeholders() -> None:
    refused = [k for k in (secrets.token_urlsafe(48) for _ in range(10_000)) if is_placeholder(k)]
    refused += [k for k in (secrets.token_hex(32) for _ in range(10_000)) if is_placeholder(k)]

    assert refused == []


def test_a_development_node_generates_its_admin_key_once_and_the_cli_finds_it(
    tmp_path: Path,
) -> None:
    key = api_key_for(None, "development", tmp_path)

    assert api_key_for(None, "development", tmp_path) == key and not is_placeholder(key)
    assert (tmp_path / "api_key").stat().st_mode & 0o077 == 0
    assert client_headers(tmp_path) == bearer(key)
    credentials = Credentials(key, LinkSigner([secrets.token_urlsafe(48)]))
    assert credentials.caller_of(f"Bearer {key}") == Caller(admin=True)
    assert credentials.caller_of(f"Bearer {key[:-1]}") is None
    assert credentials.caller_of(key) is None  # not a bearer credential
