"""recommend's SQL storage: users and their interests, digests emitted, papers sent, feedback.

SQLAlchemy 2 Core with a sync engine (SQLite file by default, PostgreSQL via DATABASE_URL); async
callers go through asyncio.to_thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

metadata = sa.MetaData()

users = sa.Table(
    "recommend_users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("frequency", sa.String(10), nullable=False),
    sa.Column("max_papers", sa.Integer, nullable=False),
    # [{"name", "text", "seed_paper_ids", "vector"}]: the text's vector is cached once computed.
    sa.Column("interests", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

digests = sa.Table(
    "recommend_digests",
    metadata,
    sa.Column("digest_key", sa.String(120), primary_key=True),
    sa.Column("user_id", sa.String(36), nullable=False, index=True),
    # due: recorded, not yet on the stream; published: on the stream; skipped: nothing to send.
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("event", sa.JSON),  # the DigestDue, so a crash before publishing can publish it later
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

sent_papers = sa.Table(
    "recommend_sent_papers",
    metadata,
    sa.Column("user_id", sa.String(36), primary_key=True),
    sa.Column("paper_id", sa.String(200), primary_key=True),
    sa.Column("digest_key", sa.String(120), nullable=False),
)

feedback = sa.Table(
    "recommend_feedback",
    metadata,
    sa.Column("feedback_id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(36), nullable=False, index=True),
    sa.Column("paper_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


class EmailTaken(Exception):
    pass


@dataclass
class Interest:
    name: str
    text: str | None = None
    seed_paper_ids: list[str] = field(default_factory=list)
    vector: list[float] | None = None


@dataclass
class User:
    id: str
    email: str
    frequency: str
    max_papers: int
    interests: list[Interest]
    created_at: datetime
    updated_at: datetime


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        frequency=row.frequency,
        max_papers=row.max_papers,
        interests=[Interest(**i) for i in row.interests],
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _interests_json(interests: Iterable[Interest]) -> list[dict[str, Any]]:
    return [vars(i).copy() for i in interests]


class Store:
    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True

    # users
    def create_user(
        self, email: str, frequency: str, max_papers: int, interests: list[Interest], now: datetime
    ) -> User:
        user = User(str(uuid.uuid4()), email, frequency, max_papers, interests, now, now)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    users.insert().values(
                        id=user.id,
                        email=email,
                        frequency=frequency,
                        max_papers=max_papers,
                        interests=_interests_json(interests),
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            raise EmailTaken(email) from exc
        return user

    def get_user(self, user_id: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(users.select().where(users.c.id == user_id)).first()
        return _user(row) if row else None

    def find_user(self, email: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(users.select().where(users.c.email == email)).first()
        return _user(row) if row else None

    def list_users(self, limit: int, offset: int) -> list[User]:
        query = users.select().order_by(users.c.created_at, users.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [_user(row) for row in conn.execute(query)]

    def scheduled_users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(users.select().where(users.c.frequency != "off"))
            return [_user(row) for row in rows]

    def update_user(self, user: User, now: datetime) -> User:
        user.updated_at = now
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    users.update()
                    .where(users.c.id == user.id)
                    .values(
                        email=user.email,
                        frequency=user.frequency,
                        max_papers=user.max_papers,
                        interests=_interests_json(user.interests),
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            raise EmailTaken(user.email) from exc
        return user

    def delete_user(self, user_id: str) -> bool:
        """Deletes the user and everything recorded about them."""
        with self.engine.begin() as conn:
            for table in (sent_papers, digests, feedback):
                conn.execute(table.delete().where(table.c.user_id == user_id))
            return conn.execute(users.delete().where(users.c.id == user_id)).rowcount > 0

    # digests
    def has_digest(self, digest_key: str) -> bool:
        with self.engine.connect() as conn:
            query = sa.select(digests.c.digest_key).where(digests.c.digest_key == digest_key)
            return conn.execute(query).first() is not None

    def last_digest_at(self, user_id: str) -> datetime | None:
        query = sa.select(sa.func.max(digests.c.created_at)).where(
            digests.c.user_id == user_id, digests.c.state != "skipped"
        )
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return _utc(value) if value else None

    def excluded_papers(self, user_id: str) -> frozenset[str]:
        """Papers never to recommend again to this user: sent, or disliked."""
        with self.engine.connect() as conn:
            sent = conn.execute(
                sa.select(sent_papers.c.paper_id).where(sent_papers.c.user_id == user_id)
            ).scalars()
            disliked = conn.execute(
                sa.select(feedback.c.paper_id).where(
                    feedback.c.user_id == user_id, feedback.c.kind == "dislike"
                )
            ).scalars()
            return frozenset(sent) | frozenset(disliked)

    def record_digest(
        self,
        digest_key: str,
        user_id: str,
        paper_ids: Sequence[str],
        event: dict[str, Any],
        now: datetime,
    ) -> bool:
        """Record a digest and its papers as sent, once: False when the key exists already."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    digests.insert().values(
                        digest_key=digest_key,
                        user_id=user_id,
                        state="due",
                        event=event,
                        created_at=now,
                    )
                )
                if paper_ids:
                    conn.execute(
                        sent_papers.insert(),
                        [
                            {"user_id": user_id, "paper_id": p, "digest_key": digest_key}
                            for p in paper_ids
                        ],
                    )
        except IntegrityError:
            return False
        return True

    def record_skipped(self, digest_key: str, user_id: str, reason: str, now: datetime) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    digests.insert().values(
                        digest_key=digest_key,
                        user_id=user_id,
                        state="skipped",
                        reason=reason,
                        created_at=now,
                    )
                )
        except IntegrityError:
            pass

    def unpublished_digests(self) -> list[dict[str, Any]]:
        """DigestDue events recorded but not yet known to be on the stream."""
        query = sa.select(digests.c.event).where(digests.c.state == "due")
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def mark_published(self, digest_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                digests.update().where(digests.c.digest_key == digest_key).values(state="published")
            )

    def digests_of(self, user_id: str) -> list[dict[str, Any]]:
        query = (
            sa.select(digests.c.digest_key, digests.c.state, digests.c.reason, digests.c.created_at)
            .where(digests.c.user_id == user_id)
            .order_by(digests.c.created_at.desc())
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # feedback
    def record_feedback(
        self,
        feedback_id: str,
        user_id: str,
        paper_id: str,
        kind: str,
        reason: str | None,
        recorded_at: datetime,
    ) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    feedback.insert().values(
                        feedback_id=feedback_id,
                        user_id=user_id,
                        paper_id=paper_id,
                        kind=kind,
                        reason=reason,
                        recorded_at=recorded_at,
                    )
                )
        except IntegrityError:
            return False
        return True
