"""The send ledger: one row per digest in SQL, so a digest delivered twice is sent once.

States: ``sending`` (a worker claimed the digest and is sending it), ``sent`` (final) and ``failed``
(the last attempt failed; the next delivery of the digest may try again: nothing was sent). A crash
between the SMTP server accepting a message and ``mark_sent`` leaves ``sending``; once the claim is
older than ``claim_timeout`` another delivery takes it over and sends again, under the same
Message-ID, so that rare duplicate is recognisable. The ledger never holds an email address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

log = logging.getLogger(__name__)

SENDING, SENT, FAILED = "sending", "sent", "failed"
# Well above one send (at most the mailer's 30 s timeout) so a live claim is never taken over.
DEFAULT_CLAIM_TIMEOUT = timedelta(minutes=10)

metadata = sa.MetaData()

deliveries = sa.Table(
    "notify_deliveries",
    metadata,
    sa.Column("digest_key", sa.String(255), primary_key=True),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(f"state IN ('{SENDING}', '{SENT}', '{FAILED}')", name="notify_state"),
)


class DeliveryInProgress(Exception):
    """Another worker holds a live claim on this digest: leave the entry pending, do not ack it."""


@dataclass(frozen=True)
class Delivery:
    digest_key: str
    user_id: str
    message_id: str
    state: str
    error: str | None
    attempts: int
    updated_at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """The ``notify_deliveries`` table through a sync SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(
        self, database_url: str, *, claim_timeout: timedelta = DEFAULT_CLAIM_TIMEOUT
    ) -> None:
        self.url = sa.make_url(database_url)
        self.engine = sa.create_engine(self.url)  # connects lazily, on first use
        self.claim_timeout = claim_timeout

    def create_tables(self) -> None:
        """Create the table when missing; safe to run on every start."""
        database = self.url.database
        if self.url.get_backend_name() == "sqlite" and database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        metadata.create_all(self.engine)

    def begin(self, digest_key: str, user_id: str, message_id: str) -> bool:
        """Claim the digest for sending: True to go ahead, False when it was already sent.

        Raises ``DeliveryInProgress`` while another worker's claim is live. Each step is one atomic
        statement, so of two workers racing on the same digest exactly one gets True.
        """
        now = _now()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(deliveries).values(
                        digest_key=digest_key,
                        user_id=user_id,
                        message_id=message_id,
                        state=SENDING,
                        attempts=1,
                        updated_at=now,
                    )
                )
            return True
        except IntegrityError:
            pass  # seen before: take it over if retryable, else tell why not

        key = deliveries.c.digest_key == digest_key
        retryable = sa.or_(
            deliveries.c.state == FAILED,
            sa.and_(
                deliveries.c.state == SENDING,
                deliveries.c.updated_at < now - self.claim_timeout,
            ),
        )
        with self.engine.begin() as conn:
            claimed = conn.execute(
                sa.update(deliveries)
                .where(key, retryable)
                .values(state=SENDING, attempts=deliveries.c.attempts + 1, updated_at=now)
            ).rowcount
            if claimed:
                return True
            state = conn.execute(sa.select(deliveries.c.state).where(key)).scalar_one()
        if state == SENT:
            return False
        raise DeliveryInProgress(digest_key)

    def mark_sent(self, digest_key: str) -> None:
        self._set(digest_key, state=SENT, error=None)

    def mark_failed(self, digest_key: str, reason: str) -> None:
        """Record a failed attempt; a later delivery of the same digest may try again."""
        self._set(digest_key, state=FAILED, error=reason)

    def get(self, digest_key: str) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(deliveries).where(deliveries.c.digest_key == digest_key)
            ).one_or_none()
        return Delivery(**row._mapping) if row else None

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            log.warning("ledger database unreachable", exc_info=True)
            return False
        return True

    def close(self) -> None:
        self.engine.dispose()

    def _set(self, digest_key: str, *, state: str, error: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(deliveries)
                .where(deliveries.c.digest_key == digest_key)
                .values(state=state, error=error, updated_at=_now())
            )
