"""The DigestDue handler in memory (TestRedisBroker), with a fake mailer and a SQLite ledger.

Each delivery ends in one outcome on the streams back to recommend: DigestSent, or DigestFailed
(with ``retry_at`` when worth retrying, ``bounced`` on a 5xx).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
import time_machine
from faststream import TestApp
from faststream.asgi import AsgiFastStream
from faststream.redis import TestRedisBroker

from paperwire_notify.app import create_app
from paperwire_notify.config import Settings
from paperwire_notify.ledger import Ledger
from paperwire_notify.mailer import PermanentSendError, TransientSendError
from paperwire_shared.events import DigestDue, DigestFailed, DigestSent, RankedPaper
from paperwire_shared.streams import DIGESTS_DUE, DIGESTS_FAILED, DIGESTS_SENT

KEY = "user-1:2026-11-27"


class Crash(Exception):
    """Stands for the process dying at that point: nothing after it runs."""


@dataclass
class FakeMailer:
    """Keeps what it sends; ``failures`` are raised first, one per send, instead of sending.

    ``crash_after_send`` keeps the message, then raises: the process died after the SMTP server
    accepted it, before the ledger heard.
    """

    sent: list[EmailMessage] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    crash_after_send: int = 0
    reachable: bool = True

    async def send(self, msg: EmailMessage) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(msg)
        if self.crash_after_send:
            self.crash_after_send -= 1
            raise Crash("after the SMTP send")

    async def ping(self) -> bool:
        return self.reachable


@dataclass
class Outcomes:
    sent: list[DigestSent] = field(default_factory=list)
    failed: list[DigestFailed] = field(default_factory=list)


def digest(key: str = KEY, *, papers: int = 2, empty_reason: str | None = None) -> DigestDue:
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
        empty_reason=empty_reason,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        smtp_url="smtp://127.0.0.1:1",
        data_dir=tmp_path,
        redis_url="redis://127.0.0.1:1",
        consumer="test",
        public_url="https://paperwire.example.org",
        send_retry_delays=(0, 0),  # two quick retries, without waiting
        max_attempts=3,
    )


@pytest.fixture
def mailer() -> FakeMailer:
    return FakeMailer()


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


@pytest.fixture
async def app(
    settings: Settings, mailer: FakeMailer, outcomes: Outcomes
) -> AsyncIterator[AsgiFastStream]:
    app = create_app(settings, mailer=mailer, ensure_groups=False)

    @app.broker.subscriber(stream=DIGESTS_SENT)
    async def on_sent(event: DigestSent) -> None:
        outcomes.sent.append(event)

    @app.broker.subscriber(stream=DIGESTS_FAILED)
    async def on_failed(event: DigestFailed) -> None:
        outcomes.failed.append(event)

    async with TestRedisBroker(app.broker), TestApp(app):
        yield app


@pytest.fixture
def ledger(settings: Settings) -> Ledger:
    return Ledger(settings.database_url)


async def test_digest_is_sent_as_one_email_and_reported_sent(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger, outcomes: Outcomes
) -> None:
    await app.broker.publish(digest(), stream=DIGESTS_DUE)

    assert [m["To"] for m in mailer.sent] == ["reader@example.org"]
    row = ledger.get(KEY)
    assert row is not None and row.state == "sent" and row.attempts == 1
    assert row.message_id == mailer.sent[0]["Message-ID"]
    [report] = outcomes.sent
    assert (report.digest_key, report.message_id) == (KEY, row.message_id)
    assert outcomes.failed == []


async def test_digest_delivered_twice_is_sent_once_and_reported_again(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger, outcomes: Outcomes
) -> None:
    await app.broker.publish(digest(), stream=DIGESTS_DUE)
    await app.broker.publish(digest(), stream=DIGESTS_DUE)

    assert len(mailer.sent) == 1
    # The second report is harmless (recommend's ledger is idempotent) and covers a lost first.
    assert [r.digest_key for r in outcomes.sent] == [KEY, KEY]


async def test_two_digests_send_two_emails(app: AsgiFastStream, mailer: FakeMailer) -> None:
    await app.broker.publish(digest("user-1:2026-11-27"), stream=DIGESTS_DUE)
    await app.broker.publish(digest("user-1:2026-11-28"), stream=DIGESTS_DUE)

    assert len({m["Message-ID"] for m in mailer.sent}) == 2


async def test_a_5xx_is_a_final_bounce_and_never_retried(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger, outcomes: Outcomes
) -> None:
    mailer.failures.append(PermanentSendError("recipient refused (550)"))

    await app.broker.publish(digest(), stream=DIGESTS_DUE)  # acked: no exception reaches us

    assert mailer.sent == []
    row = ledger.get(KEY)
    assert row is not None and row.state == "failed" and "550" in (row.error or "")
    [report] = outcomes.failed
    assert report.bounced and report.retry_at is None and "550" in report.reason


async def test_a_passing_4xx_is_retried_at_once_and_the_digest_sent(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger, outcomes: Outcomes
) -> None:
    mailer.failures += [
        TransientSendError("SMTPDataError 451: try again later"),
        TransientSendError("SMTPServerDisconnected: connection lost"),
    ]

    await app.broker.publish(digest(), stream=DIGESTS_DUE)

    assert len(mailer.sent) == 1
    assert [r.digest_key for r in outcomes.sent] == [KEY]
    assert ledger.get(KEY).state == "sent"  # type: ignore[union-attr]


async def test_a_lasting_4xx_goes_back_with_a_retry_time_that_backs_off(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger, outcomes: Outcomes
) -> None:
    down = [TransientSendError("SMTPConnectError: connection refused")] * 3  # one delivery's tries
    mailer.failures += down * 2

    started = datetime.now(UTC)
    await app.broker.publish(digest(), stream=DIGESTS_DUE)  # acked: recommend hands it over again
    await app.broker.publish(digest(), stream=DIGESTS_DUE)  # the second hand-over, still down
    await app.broker.publish(digest(), stream=DIGESTS_DUE)  # the third: the server is back

    first, second = outcomes.failed
    assert (first.attempts, second.attempts) == (1, 2)
    assert first.retry_at is not None and second.retry_at is not None
    assert first.reason.startswith("retrying: SMTPConnectError")
    assert not first.bounced
    # 1 minute, then 2: exponential backoff between deliveries.
    assert timedelta(seconds=55) < first.retry_at - started < timedelta(seconds=65)
    assert timedelta(seconds=115) < second.retry_at - started < timedelta(seconds=125)
    assert len(mailer.sent) == 1 and [r.digest_key for r in outcomes.sent] == [KEY]
    row = ledger.get(KEY)
    assert row is not None and row.state == "sent" and row.attempts == 3


async def test_after_max_attempts_the_digest_is_given_up_with_the_reason(
    app: AsgiFastStream, mailer: FakeMailer, outcomes: Outcomes
) -> None:
    mailer.failures += [TransientSendError("SMTPResponseException 421: closing")] * 9

    for _ in range(3):  # max_attempts=3 in these settings
        await app.broker.publish(digest(), stream=DIGESTS_DUE)

    assert [f.retry_at is None for f in outcomes.failed] == [False, False, True]
    assert outcomes.failed[-1].reason.startswith("gave up after 3 attempts: SMTPResponse")
    assert mailer.sent == []


async def test_an_empty_digest_is_not_sent_unless_the_user_asked_for_one(
    app: AsgiFastStream, mailer: FakeMailer, outcomes: Outcomes
) -> None:
    await app.broker.publish(digest(papers=0), stream=DIGESTS_DUE)
    assert mailer.sent == [] and outcomes.failed[0].reason == "the digest had no papers"

    asked = digest("user-1:2026-11-30", papers=0, empty_reason="no new papers")
    await app.broker.publish(asked, stream=DIGESTS_DUE)

    [email] = mailer.sent
    assert email["Subject"] == "paperwire: no new papers for you this time"
    assert "no new papers" in email.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_digest_for_an_invalid_address_fails_without_sending(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger, outcomes: Outcomes
) -> None:
    bad = digest().model_copy(update={"email": "reader@example.org\r\nBcc: victim@example.com"})

    await app.broker.publish(bad, stream=DIGESTS_DUE)

    assert mailer.sent == []
    row = ledger.get(KEY)
    assert row is not None and row.state == "failed"
    assert "example" not in (row.error or "") and "example" not in outcomes.failed[0].reason


async def test_a_crash_before_the_smtp_send_sends_the_digest_once_after_takeover(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger, outcomes: Outcomes
) -> None:
    mailer.failures.append(Crash("before the SMTP send"))

    with pytest.raises(Crash):  # the entry stays pending: the reclaimer delivers it again
        await app.broker.publish(digest(), stream=DIGESTS_DUE)
    assert ledger.get(KEY).state == "sending"  # type: ignore[union-attr]

    # Too early: the claim might still be live. The entry is left for later; nothing is sent.
    await app.broker.publish(digest(), stream=DIGESTS_DUE)
    assert mailer.sent == [] and ledger.get(KEY).state == "sending"  # type: ignore[union-attr]
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=11)):
        await app.broker.publish(digest(), stream=DIGESTS_DUE)

    assert len(mailer.sent) == 1
    assert [r.digest_key for r in outcomes.sent] == [KEY]


async def test_a_crash_after_the_smtp_send_resends_under_the_same_message_id(
    app: AsgiFastStream, mailer: FakeMailer, ledger: Ledger, outcomes: Outcomes
) -> None:
    mailer.crash_after_send = 1

    with pytest.raises(Crash):
        await app.broker.publish(digest(), stream=DIGESTS_DUE)
    await app.broker.publish(digest(), stream=DIGESTS_DUE)  # the claim is live: left for later
    assert len(mailer.sent) == 1
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=11)):
        await app.broker.publish(digest(), stream=DIGESTS_DUE)

    # The one duplicate the design allows (a crash between send and record), recognisable as such.
    first, second = mailer.sent
    assert first["Message-ID"] == second["Message-ID"]
    assert ledger.get(KEY).state == "sent"  # type: ignore[union-attr]
    assert len(outcomes.sent) == 1


async def test_the_email_carries_signed_feedback_and_one_click_unsubscribe_links(
    app: AsgiFastStream, mailer: FakeMailer
) -> None:
    await app.broker.publish(digest(), stream=DIGESTS_DUE)

    [email] = mailer.sent
    assert email["List-Unsubscribe"].startswith("<https://paperwire.example.org/unsubscribe/")
    assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = email.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert html.count("https://paperwire.example.org/feedback/") == 2 * 4


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
