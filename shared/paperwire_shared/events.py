"""The events the services exchange over Redis Streams: one frozen model per event.

Readers are tolerant (unknown fields are ignored) and changes are additive with defaults, so a newer
producer never breaks an older consumer. Every event carries the id that makes handling it idempotent.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class PaperIngested(Event):
    """A paper was found by a source. Idempotency key: ``paper_id`` + ``content_hash``."""

    paper_id: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=40)
    title: str = Field(min_length=1, max_length=2_000)
    abstract: str = Field(default="", max_length=20_000)
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    published: date | None = None
    url: str | None = None
    version: int = Field(default=1, ge=1)
    popularity: int | None = None
    ingested_at: datetime

    @property
    def text(self) -> str:
        """What gets embedded: title and abstract."""
        return f"{self.title}\n{self.abstract}" if self.abstract else self.title

    @property
    def content_hash(self) -> str:
        """Changes exactly when the embedded text changes, so the same text is never embedded twice."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:32]


class PaperEmbedded(Event):
    """A paper's vector is stored. Idempotency key: ``paper_id`` + ``content_hash``."""

    paper_id: str
    content_hash: str
    model: str
    version: int = 1
    embedded_at: datetime


class RankedPaper(Event):
    """One paper of a digest, with why it was picked."""

    paper_id: str
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    url: str | None = None
    score: float
    reason: str


class DigestDue(Event):
    """A user's digest is ready to send. Idempotency key: ``digest_key``."""

    digest_key: str
    user_id: str
    email: str
    papers: tuple[RankedPaper, ...]
    created_at: datetime
    # Set only on a digest with no papers that the user asked for anyway ("send even when empty"):
    # why there is nothing, for the email to say so.
    empty_reason: str | None = None


class DigestSent(Event):
    """notify handed a digest to the mail server. Idempotency key: ``digest_key``."""

    digest_key: str
    user_id: str
    message_id: str
    sent_at: datetime


class DigestFailed(Event):
    """A send attempt failed. Idempotency key: ``digest_key`` + ``attempts``.

    ``retry_at`` set: a transient failure (SMTP 4xx, timeout, dropped connection); the digest is to be
    handed over again from then. ``retry_at`` None: final. ``bounced``: the server refused the
    address (5xx), which counts towards suppressing it.
    """

    digest_key: str
    user_id: str
    reason: str
    attempts: int = 1
    retry_at: datetime | None = None
    bounced: bool = False
    failed_at: datetime


FeedbackKind = Literal["like", "dislike", "save", "click"]


class FeedbackRecorded(Event):
    """A user reacted to a paper. Idempotency key: ``feedback_id``."""

    feedback_id: str
    user_id: str
    paper_id: str
    kind: FeedbackKind
    reason: str | None = None
    recorded_at: datetime


class TextsToEncode(Event):
    """A request (reply expected) for embed to encode short texts: queries and interests."""

    texts: tuple[str, ...] = Field(min_length=1, max_length=64)


class TextsEncoded(Event):
    """The reply to ``TextsToEncode``: one unit-length vector per text, in order."""

    model: str
    vectors: tuple[tuple[float, ...], ...]
