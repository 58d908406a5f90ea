"""The send ledger on both SQL backends: claims, outcomes, retries and takeovers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from paperwire_notify.ledger import DeliveryInProgress, Ledger

KEY = "user-1:2026-11-27"
MESSAGE_ID = "<0123456789abcdef0123456789abcdef@paperwire>"


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    ledger = Ledger(database_url)
    ledger.create_tables()
    yield ledger
    ledger.close()


def test_first_claim_goes_ahead_and_is_recorded(ledger: Ledger) -> None:
    assert ledger.begin(KEY, "user-1", MESSAGE_ID)

    row = ledger.get(KEY)
    assert row is not None
    assert (row.user_id, row.message_id, row.state, row.attempts) == (
        "user-1",
        MESSAGE_ID,
        "sending",
        1,
    )
    assert row.updated_at is not None


def test_sent_digest_is_never_claimed_again(ledger: Ledger) -> None:
    assert ledger.begin(KEY, "user-1", MESSAGE_ID)
    ledger.mark_sent(KEY)

    assert not ledger.begin(KEY, "user-1", MESSAGE_ID)
    row = ledger.get(KEY)
    assert row is not None and row.state == "sent" and row.attempts == 1


def test_live_claim_blocks_a_second_worker(ledger: Ledger) -> None:
    assert ledger.begin(KEY, "user-1", MESSAGE_ID)

    with pytest.raises(DeliveryInProgress):
        ledger.begin(KEY, "user-1", MESSAGE_ID)


def test_failed_digest_can_be_claimed_again(ledger: Ledger) -> None:
    assert ledger.begin(KEY, "user-1", MESSAGE_ID)
    ledger.mark_failed(KEY, "retryable: connection refused")

    row = ledger.get(KEY)
    assert row is not None and row.state == "failed"
    assert row.error == "retryable: connection refused"

    assert ledger.begin(KEY, "user-1", MESSAGE_ID)
    ledger.mark_sent(KEY)
    row = ledger.get(KEY)
    assert row is not None and (row.state, row.attempts, row.error) == ("sent", 2, None)


def test_stale_claim_is_taken_over(database_url: str, ledger: Ledger) -> None:
    assert ledger.begin(KEY, "user-1", MESSAGE_ID)  # then the worker died mid-send
    impatient = Ledger(database_url, claim_timeout=timedelta(0))

    try:
        assert impatient.begin(KEY, "user-1", MESSAGE_ID)
    finally:
        impatient.close()
    row = ledger.get(KEY)
    assert row is not None and row.state == "sending" and row.attempts == 2


def test_tables_can_be_created_on_every_start(database_url: str, ledger: Ledger) -> None:
    assert ledger.begin(KEY, "user-1", MESSAGE_ID)

    ledger.create_tables()

    assert ledger.get(KEY) is not None
    assert ledger.ping()


def test_unknown_digest_has_no_row(ledger: Ledger) -> None:
    assert ledger.get("nobody:never") is None
