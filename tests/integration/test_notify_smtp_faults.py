"""notify against a real SMTP server that misbehaves: 421, 451, 550, a dropped connection.

An aiosmtpd server follows a script of failures, then accepts; notify's outcome (DigestSent or
DigestFailed) and what the server kept are checked. Streams run in memory (TestRedisBroker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from faststream import TestApp
from faststream.redis import TestRedisBroker

from paperwire.stack import free_port
from paperwire_notify.app import create_app
from paperwire_notify.config import Settings
from paperwire_notify.mailer import SmtpMailer, TransientSendError
from paperwire_notify.render import render_digest
from paperwire_shared.events import DigestDue, DigestFailed, DigestSent, RankedPaper
from paperwire_shared.streams import DIGESTS_DUE, DIGESTS_FAILED, DIGESTS_SENT

KEY = "user-1/2026-11-27"


@dataclass
class Scripted:
    """Answers each attempt from ``script`` ((stage, reply): stage "rcpt" or "data"; reply
    "drop" closes the connection), then accepts and keeps the message."""

    script: list[tuple[str, str]]
    kept: list[bytes] = field(default_factory=list)

    def _next(self, stage: str) -> str | None:
        if self.script and self.script[0][0] == stage:
            return self.script.pop(0)[1]
        return None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if reply := self._next("rcpt"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        reply = self._next("data")
        if reply == "drop":
            server.transport.close()
            return "250 never seen"
        if reply:
            return reply
        self.kept.append(envelope.content)
        return "250 Message accepted for delivery"


@dataclass
class Run:
    server: Scripted
    publish_digest: object
    sent: list[DigestSent]
    failed: list[DigestFailed]


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[tuple[Scripted, str]]:
    handler = Scripted(list(request.param))
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


@pytest.fixture
async def run(smtp: tuple[Scripted, str], tmp_path: Path) -> AsyncIterator[Run]:
    server, url = smtp
    settings = Settings(
        redis_url="redis://unused",
        smtp_url=url,
        data_dir=tmp_path,
        consumer="it",
        public_url="https://paperwire.example.org",
        send_retry_delays=(0, 0),
    )
    app = create_app(settings, ensure_groups=False)
    sent: list[DigestSent] = []
    failed: list[DigestFailed] = []

    @app.broker.subscriber(stream=DIGESTS_SENT)
    async def on_sent(event: DigestSent) -> None:
        sent.append(event)

    @app.broker.subscriber(stream=DIGESTS_FAILED)
    async def on_failed(event: DigestFailed) -> None:
        failed.append(event)

    async def publish_digest() -> None:
        await app.broker.publish(digest(), stream=DIGESTS_DUE)

    async with TestRedisBroker(app.broker), TestApp(app):
        yield Run(server, publish_digest, sent, failed)


def digest() -> DigestDue:
    return DigestDue(
        digest_key=KEY,
        user_id="user-1",
        email="reader@example.org",
        papers=(
            RankedPaper(
                paper_id="2611.00001",
                title="Sparse attention at scale",
                url="https://arxiv.org/abs/2611.00001",
                score=0.9,
                reason="matches your interest",
            ),
        ),
        created_at=datetime(2026, 11, 27, 7, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "smtp",
    [
        [("rcpt", "421 4.7.0 Try again later, closing connection")],
        [("data", "451 4.3.0 Temporary failure"), ("data", "451 4.3.0 Temporary failure")],
        [("data", "drop")],
    ],
    indirect=True,
    ids=["421-rcpt", "451-data-twice", "dropped-connection"],
)
async def test_a_passing_failure_is_retried_and_the_digest_arrives_once(run: Run) -> None:
    await run.publish_digest()  # type: ignore[operator]

    [raw] = run.server.kept
    kept = message_from_bytes(raw, policy=policy.default)
    assert "Sparse attention at scale" in kept["Subject"]
    assert [e.digest_key for e in run.sent] == [KEY] and run.failed == []


@pytest.mark.parametrize(
    "smtp", [[("rcpt", "550 5.1.1 <reader@example.org>: no such user")]], indirect=True
)
async def test_a_550_is_a_bounce_and_nothing_is_sent(run: Run) -> None:
    await run.publish_digest()  # type: ignore[operator]

    assert run.server.kept == [] and run.sent == []
    [bounce] = run.failed
    assert bounce.bounced and bounce.retry_at is None
    assert "550" in bounce.reason and "reader@example.org" not in bounce.reason


@pytest.mark.parametrize("smtp", [[("data", "451 4.3.0 Mailbox busy")] * 4], indirect=True)
async def test_a_lasting_451_goes_back_for_later_and_the_handover_sends_it_once(run: Run) -> None:
    await run.publish_digest()  # type: ignore[operator]

    [later] = run.failed
    assert later.retry_at is not None and not later.bounced and "451" in later.reason
    assert run.server.kept == []

    await run.publish_digest()  # recommend hands it over again at retry_at
    await run.publish_digest()  # and a stray duplicate changes nothing

    assert len(run.server.kept) == 1
    assert [e.digest_key for e in run.sent] == [KEY, KEY]


class Silent:
    """Accepts the connection, then never answers DATA: a server that hung."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(3)  # far beyond the 0.5 s timeout below
        return "250 too late"


async def test_a_server_that_stops_answering_is_a_transient_failure() -> None:
    controller = Controller(Silent(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        mailer = SmtpMailer(f"smtp://127.0.0.1:{controller.port}", timeout=0.5)
        msg = render_digest(digest(), sender="p <p@x.org>", base_url=None)
        with pytest.raises(TransientSendError, match="Timeout"):
            await mailer.send(msg)
    finally:
        controller.stop()
