"""SmtpMailer against real SMTP servers: the single-node sink and aiosmtpd servers that refuse."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from paperwire.stack import free_port, read_outbox, smtp_sink_url, start_smtp_sink
from paperwire_notify.mailer import (
    PermanentSendError,
    SmtpMailer,
    TransientSendError,
)
from paperwire_notify.render import render_digest
from paperwire_shared.events import DigestDue, RankedPaper

RECIPIENT = "reader@example.org"


def message(key: str = "user-1:2026-11-27") -> EmailMessage:
    digest = DigestDue(
        digest_key=key,
        user_id="user-1",
        email=RECIPIENT,
        papers=(
            RankedPaper(
                paper_id="p1",
                title="Sparse attention at scale",
                authors=("Ada Lovelace",),
                url="https://arxiv.org/abs/2611.00001",
                score=0.9,
                reason="close to your interest: efficient transformers",
            ),
        ),
        created_at=datetime(2026, 11, 27, 7, tzinfo=UTC),
    )
    return render_digest(digest, sender="paperwire <digest@paperwire.localhost>", base_url=None)


class Refusing:
    """An aiosmtpd handler answering RCPT or DATA with a fixed reply."""

    def __init__(self, *, rcpt: str | None = None, data: str | None = None) -> None:
        self.rcpt = rcpt
        self.data = data

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.rcpt:
            return self.rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        return self.data or "250 Message accepted for delivery"


@pytest.fixture
def refusing_server(request: pytest.FixtureRequest) -> Iterator[str]:
    controller = Controller(request.param, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield f"smtp://127.0.0.1:{controller.port}"
    controller.stop()


async def test_message_reaches_the_sink_with_both_parts(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sink = start_smtp_sink(outbox)
    try:
        await SmtpMailer(smtp_sink_url(sink)).send(message())
    finally:
        sink.stop()

    [kept] = read_outbox(outbox)
    assert kept.message["To"] == RECIPIENT
    assert kept.message["Message-ID"] == message()["Message-ID"]
    text = kept.message.get_body(preferencelist=("plain",))
    html = kept.message.get_body(preferencelist=("html",))
    assert text is not None and "Sparse attention at scale" in text.get_content()
    assert html is not None and "Sparse attention at scale" in html.get_content()


async def test_sink_is_reachable_for_readiness(tmp_path: Path) -> None:
    sink = start_smtp_sink(tmp_path / "outbox")
    try:
        assert await SmtpMailer(smtp_sink_url(sink)).ping()
    finally:
        sink.stop()
    assert not await SmtpMailer(smtp_sink_url(sink)).ping()


@pytest.mark.parametrize(
    "refusing_server",
    [Refusing(rcpt="550 5.1.1 <reader@example.org>: no such user"), Refusing(data="554 5.7.1 no")],
    indirect=True,
    ids=["rcpt-550", "data-554"],
)
async def test_5xx_reply_is_a_permanent_error(refusing_server: str) -> None:
    with pytest.raises(PermanentSendError) as err:
        await SmtpMailer(refusing_server).send(message())
    assert RECIPIENT not in str(err.value)


@pytest.mark.parametrize(
    "refusing_server",
    [Refusing(rcpt="450 4.2.0 mailbox busy"), Refusing(data="451 4.3.0 try again later")],
    indirect=True,
    ids=["rcpt-450", "data-451"],
)
async def test_4xx_reply_is_a_transient_error(refusing_server: str) -> None:
    with pytest.raises(TransientSendError):
        await SmtpMailer(refusing_server).send(message())


async def test_refused_connection_is_a_transient_error() -> None:
    with pytest.raises(TransientSendError):
        await SmtpMailer(f"smtp://127.0.0.1:{free_port()}", timeout=5).send(message())
