"""The DigestDue handler in memory (TestRedisBroker), with a fake mailer and a SQLite ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from faststream import TestApp
from faststream.asgi import AsgiFastStream
from faststream.redis import TestRedisBroker

from paperwire_notify.app import create_app
from paperwire_notify.config import Settings
from paperwire_notify.ledger import Ledger
from paperwire_notify.mailer import PermanentSendError, TransientSendError
from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.streams import DIGESTS_DUE


@dataclass
class FakeMailer:
    """Keeps what it sends; ``failures`` are raised first, one per send, instead of sending."""

    sent: list[EmailMessage] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    reachable: bool = True

    async def send(self, msg: EmailMessage) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(msg)

    async def ping(self) -> bool:
        return self.reachable


def digest(key: str = "user-1:2026-11-27", *, papers: int = 2) -> DigestDue:
    return DigestDue(
        digest_key=key,
        user_id="user-1",
        email="reader@example.org",
        papers=tuple(
            RankedPaper(
                paper_id=f"p{n}",
                title=f"Paper {n}",
                abstract="An abstract.",
                authors=("Ada Lovelace",),
                url=f"https://arxiv.org/abs/{n}",
                score=1.0 - n / 10,
                reason="like a paper you saved",
            )
            for n in range(papers)
        ),
        created_at=datetime(2026, 11, 27, 7, tzinfo=UTC),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        smtp_url="smtp://127.0.0.1:1",
        data_dir=tmp_path,
        redis_url="redis://127.0.0.1:1",
        consumer="test",
    )


@pytest.fixture
def mailer() -> FakeMailer:
    return FakeMailer()


@pytest.fixture
async def app(settings: Settings, mailer: FakeMailer) -> AsyncIterator[AsgiFastStream]:
    app = create_app(settings, mailer=mailer, ensure_groups=False)
    async with TestRedisBroker(app.broker), TestApp(app):
        yield app


@pytest.fixture
def ledger(settings: Settings) -> Ledger:
    return Ledger(settings.database_url)


async def test_digest_is_sent_as_one_email_to_its_reader(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger
) -> None:
    await app.broker.publish(digest(), stream=DIGESTS_DUE)

    assert [m["To"] for m in mailer.sent] == ["reader@example.org"]
    row = ledger.get("user-1:2026-11-27")
    assert row is not None and row.state == "sent" and row.attempts == 1
    assert row.message_id == mailer.sent[0]["Message-ID"]


async def test_digest_delivered_twice_is_sent_once(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger
) -> None:
    await app.broker.publish(digest(), stream=DIGESTS_DUE)
    await app.broker.publish(digest(), stream=DIGESTS_DUE)

    assert len(mailer.sent) == 1
    row = ledger.get("user-1:2026-11-27")
    assert row is not None and row.state == "sent"


async def test_two_digests_send_two_emails(app: AsgiFastStream, mailer: FakeMailer) -> None:
    await app.broker.publish(digest("user-1:2026-11-27"), stream=DIGESTS_DUE)
    await app.broker.publish(digest("user-1:2026-11-28"), stream=DIGESTS_DUE)

    assert len({m["Message-ID"] for m in mailer.sent}) == 2


async def test_permanent_refusal_is_recorded_and_not_retried(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger
) -> None:
    mailer.failures.append(PermanentSendError("recipient refused (550)"))

    await app.broker.publish(digest(), stream=DIGESTS_DUE)  # acked: no exception reaches us

    assert mailer.sent == []
    row = ledger.get("user-1:2026-11-27")
    assert row is not None and row.state == "failed" and row.error == "recipient refused (550)"


async def test_transient_error_leaves_the_digest_for_a_later_delivery(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger
) -> None:
    mailer.failures.append(TransientSendError("SMTPConnectError: connection refused"))

    # The handler re-raises, so the entry is not acked (in memory the error reaches the caller).
    with pytest.raises(TransientSendError):
        await app.broker.publish(digest(), stream=DIGESTS_DUE)
    row = ledger.get("user-1:2026-11-27")
    assert row is not None and row.state == "failed" and row.error is not None

    await app.broker.publish(digest(), stream=DIGESTS_DUE)  # the redelivery

    assert len(mailer.sent) == 1
    row = ledger.get("user-1:2026-11-27")
    assert row is not None and row.state == "sent" and row.attempts == 2


async def test_empty_digest_is_not_sent(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger
) -> None:
    await app.broker.publish(digest(papers=0), stream=DIGESTS_DUE)

    assert mailer.sent == []
    row = ledger.get("user-1:2026-11-27")
    assert row is not None and row.state == "failed" and row.error == "empty"


async def test_digest_for_an_invalid_address_fails_without_sending(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger
) -> None:
    bad = digest().model_copy(update={"email": "reader@example.org\r\nBcc: victim@example.com"})

    await app.broker.publish(bad, stream=DIGESTS_DUE)

    assert mailer.sent == []
    row = ledger.get("user-1:2026-11-27")
    assert row is not None and row.state == "failed"
    assert "example" not in (row.error or "")


async def test_metrics_count_sent_and_skipped_digests(
    app: AsgiFastStream, mailer: FakeMailer
) -> None:
    await app.broker.publish(digest(), stream=DIGESTS_DUE)
    await app.broker.publish(digest(), stream=DIGESTS_DUE)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notify"
    ) as client:
        body = (await client.get("/metrics")).text

    assert "paperwire_notify_digests_sent_total 1.0" in body
    assert "paperwire_notify_duplicates_skipped_total 1.0" in body
    assert "paperwire_notify_send_duration_seconds_count 1.0" in body


async def test_health_and_readiness_routes(app: AsgiFastStream, mailer: FakeMailer) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notify"
    ) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200

        mailer.reachable = False
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert "smtp" in not_ready.text
