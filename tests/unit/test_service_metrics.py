"""Metrics the services count as they work, read back from their /metrics (in memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from faststream import TestApp
from faststream.asgi import AsgiFastStream
from faststream.redis import TestRedisBroker
from prometheus_client.parser import text_string_to_metric_families

from paperwire_notify.app import create_app as notify_app
from paperwire_notify.config import Settings as NotifySettings
from paperwire_notify.mailer import PermanentSendError, TransientSendError
from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.streams import DIGESTS_DUE
from tests.support.auth import admin_headers
from tests.support.exported_metrics import UNUSED_REDIS


class FailingMailer:
    """Raises the queued errors one per send, then accepts."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.sent: list[EmailMessage] = []

    async def send(self, msg: EmailMessage) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(msg)

    async def ping(self) -> bool:
        return True


def digest(key: str) -> DigestDue:
    return DigestDue(
        digest_key=key,
        user_id="user-1",
        email="reader@example.org",
        papers=(RankedPaper(paper_id="p1", title="Paper", score=0.9, reason="close to a seed"),),
        created_at=datetime(2026, 11, 27, 7, tzinfo=UTC),
    )


async def scrape(app: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        text = (await client.get("/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def mailer() -> FailingMailer:
    return FailingMailer(
        PermanentSendError("recipient refused (550)"), TransientSendError("451 try later")
    )


@pytest.fixture
async def notify(tmp_path: Path, mailer: FailingMailer) -> AsyncIterator[AsgiFastStream]:
    settings = NotifySettings(
        smtp_url="smtp://127.0.0.1:1",
        data_dir=tmp_path,
        redis_url=UNUSED_REDIS,
        consumer="test",
        send_retry_delays=(0,),  # one quick retry inside the delivery, without waiting
    )
    app = notify_app(settings, mailer=mailer, ensure_groups=False)
    async with TestRedisBroker(app.broker), TestApp(app):
        yield app


async def test_smtp_errors_are_counted_by_kind_and_a_refusal_counts_as_a_bounce(
    notify: AsgiFastStream, mailer: FailingMailer
) -> None:
    await notify.broker.publish(digest("user-1:2026-11-27"), stream=DIGESTS_DUE)  # 550: bounced
    await notify.broker.publish(digest("user-1:2026-11-28"), stream=DIGESTS_DUE)  # 451, then sent

    found = await scrape(notify)
    assert found[("paperwire_notify_smtp_errors_total", (("kind", "permanent"),))] == 1
    assert found[("paperwire_notify_smtp_errors_total", (("kind", "transient"),))] == 1
    assert len(mailer.sent) == 1


async def test_api_requests_are_counted_per_route_template_never_per_raw_path(
    tmp_path: Path,
) -> None:
    from paperwire_recommend.app import create_app as recommend_app
    from paperwire_recommend.config import Settings as RecommendSettings
    from paperwire_recommend.store import Store
    from paperwire_shared.vectors import QdrantEdgeStore
    from tests.fakes import HashingEncoder, LocalTextEncoder

    store = Store(f"sqlite:///{tmp_path / 'paperwire.db'}")
    vectors = QdrantEdgeStore(tmp_path / "qdrant")
    app = recommend_app(
        RecommendSettings(redis_url=UNUSED_REDIS, data_dir=tmp_path),
        store=store,
        vectors=vectors,
        encoder=LocalTextEncoder(HashingEncoder()),
        ensure_groups=False,
        run_scheduler=False,
    )
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://api", headers=admin_headers(tmp_path)
        ) as client:
            for path in ("/v1/papers/2611.00001", "/v1/papers/2611.00002", "/nope/42", "/healthz"):
                await client.get(path)
        found = await scrape(app)
    finally:
        vectors.close()
        store.close()
    requests = {
        dict(labels)["handler"]: value
        for (name, labels), value in found.items()
        if name == "http_requests_total"
    }
    assert requests == {"/v1/papers/{paper_id:path}": 2, "none": 1}
