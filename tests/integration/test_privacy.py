"""Privacy: a whole digest run logs no address or secret, and deleting a user deletes their data.

recommend is served over HTTP by uvicorn with its access log on, notify sends to the SMTP sink,
the streams between them run in memory (TestRedisBroker). Every log record of every logger, at
DEBUG, is captured (the access log and the SMTP sink's log included), and both services'
metrics are scraped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from faststream import TestApp
from faststream.redis import RedisBroker, TestRedisBroker

from paperwire.stack import free_port, read_outbox, smtp_sink_url, start_smtp_sink
from paperwire_notify.app import create_app as notify_app
from paperwire_notify.config import Settings as NotifySettings
from paperwire_recommend.store import Store
from paperwire_shared.vectors import QdrantEdgeStore
from tests.fakes import HashingEncoder
from tests.support.auth import bearer
from tests.support.recommend import asgi_client, recommend_app, served, stored_papers

EMAIL = "ada.lovelace@example.org"
PAPERS = {
    "2611.00001": "LoRA: low-rank adapters for fine-tuning language models",
    "2611.00002": "Adapters and prefix tuning of large language models",
}


async def test_a_digest_run_logs_no_address_or_secret_and_deletion_leaves_no_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    # Every logger reaches caplog, whatever an earlier test's logging setup did (uvicorn's own
    # config stops its access log from propagating, for one).
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "disabled", False)
            monkeypatch.setattr(logger, "propagate", True)
    admin_key, secret_key = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
    encoder = HashingEncoder()
    now = datetime.now(UTC).timestamp()
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    vectors.upsert(stored_papers(PAPERS, encoder, now, abstract=""))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    outbox = tmp_path / "outbox"
    sink = start_smtp_sink(outbox)
    broker = RedisBroker()
    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    recommend = recommend_app(
        tmp_path,
        broker=broker,
        store=store,
        vectors=vectors,
        encoder=encoder,
        secret_key=secret_key,
        api_key=admin_key,
        min_score=0.0,
    )
    notify = notify_app(
        NotifySettings(
            redis_url="redis://unused",
            data_dir=tmp_path,
            secret_key=secret_key,
            smtp_url=smtp_sink_url(sink),
            public_url=base,
            send_retry_delays=(),
        ),
        broker=broker,
        ensure_groups=False,
    )
    # log_config=None: uvicorn's loggers propagate to the root, where caplog listens.
    serving = served(recommend, port, log_config=None, log_level="debug", access_log=True)
    try:
        async with (
            TestRedisBroker(broker),
            TestApp(notify),
            serving,
            httpx.AsyncClient(base_url=base, timeout=30) as api,
        ):
            created = await api.post(
                "/v1/users",
                json={
                    "email": EMAIL,
                    "interests": [{"name": "LLM", "text": "low-rank adapters"}],
                },
                headers=bearer(admin_key),
            )
            assert created.status_code == 201, created.text
            user_id, token = created.json()["id"], created.json()["token"]
            user = bearer(token)
            digest = await api.post(f"/v1/users/{user_id}/digest", headers=user)
            assert digest.json()["state"] == "due", digest.text
            for _ in range(200):
                if read_outbox(outbox):
                    break
                await asyncio.sleep(0.05)
            [mail] = read_outbox(outbox)
            assert mail.message["To"] == EMAIL
            for _ in range(200):
                states = await api.get(f"/v1/users/{user_id}/deliveries", headers=user)
                if states.json()[0]["state"] == "sent":
                    break
                await asyncio.sleep(0.05)
            assert states.json()[0]["state"] == "sent"
            scraped = (await api.get("/metrics")).text
            async with asgi_client(notify, "http://notify") as notify_client:
                scraped += (await notify_client.get("/metrics")).text

            deleted = await api.delete(f"/v1/users/{user_id}", headers=user)
            assert deleted.status_code == 204
    finally:
        sink.stop()
        vectors.close()

    # No address and no secret in any log line or metric.
    secrets_seen = {EMAIL, "ada.lovelace", admin_key, secret_key, token}
    logged = [record for record in caplog.records if record.levelno >= logging.DEBUG]
    assert len(logged) > 10  # the run did log: the access log, notify, the sink
    assert any(r.name == "uvicorn.access" for r in logged)
    for record in logged:
        line = f"{record.name} {record.getMessage()} {record.exc_text or ''}"
        assert not [s for s in secrets_seen if s in line], line
    assert not [s for s in secrets_seen if s in scraped]

    # Everything recommend recorded about the user is gone, in every table.
    with store.engine.connect() as conn:
        left = {
            table.name: conn.execute(
                sa.select(sa.func.count()).select_from(table).where(column == user_id)
            ).scalar()
            for table in store_tables(store)
            for column in [table.c.get("user_id", table.c.get("id"))]
        }
        # What remains is notify's send ledger (digest key, user id, Message-ID, state): it keeps
        # a redelivered digest from being mailed twice, and holds no address.
        ledger = [
            tuple(map(str, row)) for row in conn.execute(sa.text("SELECT * FROM notify_deliveries"))
        ]
    store.close()
    assert {name: n for name, n in left.items() if n} == {"notify_deliveries": 1}
    assert not [value for row in ledger for value in row if "ada.lovelace" in value]


def store_tables(store: Store) -> list[sa.Table]:
    names = sa.inspect(store.engine).get_table_names()
    tables = [sa.Table(n, sa.MetaData(), autoload_with=store.engine) for n in names]
    return [t for t in tables if "user_id" in t.c or t.name == "users"]
