"""recommend's SQL storage: users and their interests, digests emitted, papers sent, feedback.

Also each user's subscription (schedule, paused, unsubscribed or suppressed) and the links already
used, for one-shot email links.

SQLAlchemy 2 Core with a sync engine (SQLite file by default, PostgreSQL via DATABASE_URL); async
callers go through asyncio.to_thread.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from paperwire_recommend.digest import Schedule
from paperwire_shared.events import FeedbackRecorded

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
    # The delivery ledger, one row per (user, digest key): see DIGEST_STATES.
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("event", sa.JSON),  # the DigestDue, so a crash before publishing can publish it later
    # When the digest was due (its slot), not when a late scheduler got to it.
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    # A transient send failure: handed to notify again from then (state due).
    sa.Column("retry_at", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("message_id", sa.String(255)),
)
# due: recorded with its papers, to hand to notify (again, after a transient failure, from
# retry_at); sending: on the stream; sent: notify handed it to the mail server; skipped: no email,
# with the reason; failed: given up, with the reason (its papers may go in a later digest).
DIGEST_STATES = ("due", "sending", "sent", "skipped", "failed")

subscriptions = sa.Table(
    "recommend_subscriptions",
    metadata,
    sa.Column("user_id", sa.String(36), primary_key=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("send_hour", sa.Integer, nullable=False),
    sa.Column("weekday", sa.Integer, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("send_empty", sa.Boolean, nullable=False),
    # active, unsubscribed (the user said stop), or suppressed (the address kept bouncing).
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("bounces", sa.Integer, nullable=False),
    # No digest is due before this: set when digests (re)start, so nothing is backfilled.
    sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

used_links = sa.Table(
    "recommend_used_links",
    metadata,
    sa.Column("token_id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(36), nullable=False, index=True),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
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

# A user's ranking knobs (ranking.Knobs); no row: the defaults.
ranking_knobs = sa.Table(
    "recommend_ranking_knobs",
    metadata,
    sa.Column("user_id", sa.String(36), primary_key=True),
    sa.Column("recency", sa.Float, nullable=False),
    sa.Column("popularity", sa.Float, nullable=False),
    sa.Column("diversity", sa.Float, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
# Feedback that makes a paper part of the user's library: evidence, and co-saves for others.
POSITIVE_FEEDBACK = ("like", "save")


class EmailTaken(Exception):
    pass


@dataclass
class Subscription:
    """How and when a user gets email; ``schedule.frequency`` is the user's own ``frequency``."""

    user_id: str
    schedule: Schedule
    starts_at: datetime
    status: str = "active"
    bounces: int = 0

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class DigestRecord:
    """One row of the delivery ledger, as the delivery log shows it."""

    digest_key: str
    state: str
    reason: str | None
    due_at: datetime
    updated_at: datetime | None
    attempts: int
    papers: list[dict[str, Any]]


@dataclass
class Interest:
    name: str
    text: str | None = None
    seed_paper_ids: list[str] = field(default_factory=list)
    vector: list[float] | None = None
    # Filters and boosts (ranking.Rules); absent from rows written before they existed.
    include_keywords: list[str] = field(default_factory=list)
    exclude_keywords: list[str] = field(default_factory=list)
    include_categories: list[str] = field(default_factory=list)
    exclude_categories: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)


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
            for table in (sent_papers, digests, feedback, subscriptions, used_links, ranking_knobs):
                conn.execute(table.delete().where(table.c.user_id == user_id))
            return conn.execute(users.delete().where(users.c.id == user_id)).rowcount > 0

    # digests
    def has_digest(self, digest_key: str) -> bool:
        with self.engine.connect() as conn:
            query = sa.select(digests.c.digest_key).where(digests.c.digest_key == digest_key)
            return conn.execute(query).first() is not None

    def last_digest_at(self, user_id: str) -> datetime | None:
        query = sa.select(sa.func.max(digests.c.created_at)).where(
            digests.c.user_id == user_id, digests.c.state.not_in(("skipped", "failed"))
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

    def unpublished_digests(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """DigestDue events recorded but not (or no longer) on the stream: due, and not waiting to retry."""
        query = sa.select(digests.c.event).where(digests.c.state == "due")
        if now is not None:
            query = query.where(sa.or_(digests.c.retry_at.is_(None), digests.c.retry_at <= now))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def mark_published(self, digest_key: str, now: datetime | None = None) -> None:
        """The digest is on the stream: ``sending``, unless notify already reported an outcome."""
        with self.engine.begin() as conn:
            conn.execute(
                digests.update()
                .where(digests.c.digest_key == digest_key, digests.c.state == "due")
                .values(state="sending", updated_at=now or datetime.now(UTC))
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
    def record_feedback(self, event: FeedbackRecorded) -> bool:
        """Store a reaction once (by its feedback id); False when it was stored already."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    feedback.insert().values(
                        feedback_id=event.feedback_id,
                        user_id=event.user_id,
                        paper_id=event.paper_id,
                        kind=event.kind,
                        reason=event.reason,
                        recorded_at=event.recorded_at,
                    )
                )
        except IntegrityError:
            return False
        return True

    def feedback_of(self, user_id: str) -> list[dict[str, Any]]:
        """The user's feedback, oldest first: paper_id, kind, reason, recorded_at, feedback_id."""
        query = (
            sa.select(feedback)
            .where(feedback.c.user_id == user_id)
            .order_by(feedback.c.recorded_at, feedback.c.feedback_id)
        )
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        for row in rows:
            row["recorded_at"] = _utc(row["recorded_at"])
        return rows

    def library_pairs(self) -> list[tuple[str, str]]:
        """Every (user, paper) a user chose: interest seed papers, and papers whose latest
        feedback is a like or a save. What co-saves (collaborative.CoSaves) learn from."""
        pairs: dict[tuple[str, str], bool] = {}
        with self.engine.connect() as conn:
            for user_id, interests in conn.execute(sa.select(users.c.id, users.c.interests)):
                for interest in interests or []:
                    for paper_id in interest.get("seed_paper_ids") or []:
                        pairs[(user_id, paper_id)] = True
            query = (
                sa.select(feedback.c.user_id, feedback.c.paper_id, feedback.c.kind)
                .where(feedback.c.kind.in_((*POSITIVE_FEEDBACK, "dislike")))
                .order_by(feedback.c.recorded_at, feedback.c.feedback_id)
            )
            for user_id, paper_id, kind in conn.execute(query):
                pairs[(user_id, paper_id)] = kind in POSITIVE_FEEDBACK
        return [pair for pair, positive in pairs.items() if positive]

    def get_knobs(self, user_id: str) -> dict[str, float] | None:
        query = sa.select(
            ranking_knobs.c.recency, ranking_knobs.c.popularity, ranking_knobs.c.diversity
        ).where(ranking_knobs.c.user_id == user_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None

    def save_knobs(self, user_id: str, knobs: dict[str, float], now: datetime) -> None:
        values = {**knobs, "updated_at": now}
        with self.engine.begin() as conn:
            updated = conn.execute(
                ranking_knobs.update().where(ranking_knobs.c.user_id == user_id).values(**values)
            ).rowcount
            if not updated:
                conn.execute(ranking_knobs.insert().values(user_id=user_id, **values))

    # subscriptions: schedule and mail status
    def get_subscription(self, user: User, defaults: Schedule) -> Subscription:
        """The user's subscription; one never saved gets ``defaults`` and starts at sign-up."""
        with self.engine.connect() as conn:
            row = conn.execute(
                subscriptions.select().where(subscriptions.c.user_id == user.id)
            ).first()
        return _subscription(user, row, defaults)

    def subscribers(self, defaults: Schedule) -> list[tuple[User, Subscription]]:
        """Users whose digests are scheduled (frequency not off) and who still get email."""
        query = (
            sa.select(users, *[c.label(f"s_{c.name}") for c in subscriptions.c])
            .select_from(users.outerjoin(subscriptions, subscriptions.c.user_id == users.c.id))
            .where(
                users.c.frequency != "off",
                sa.or_(subscriptions.c.status.is_(None), subscriptions.c.status == "active"),
            )
        )
        found = []
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                user = _user(row)
                saved = row if row.s_user_id is not None else None
                found.append((user, _subscription(user, saved, defaults, prefix="s_")))
        return found

    def save_subscription(
        self, sub: Subscription, now: datetime, *, max_papers: int | None = None
    ) -> None:
        """Store the subscription; its frequency (and ``max_papers``) live on the user row."""
        schedule = sub.schedule
        values = {
            "timezone": schedule.timezone,
            "send_hour": schedule.send_hour,
            "weekday": schedule.weekday,
            "paused": schedule.paused,
            "send_empty": schedule.send_empty,
            "status": sub.status,
            "bounces": sub.bounces,
            "starts_at": sub.starts_at,
            "updated_at": now,
        }
        user_values: dict[str, Any] = {"frequency": schedule.frequency, "updated_at": now}
        if max_papers is not None:
            user_values["max_papers"] = max_papers
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == sub.user_id).values(**user_values))
            updated = conn.execute(
                subscriptions.update()
                .where(subscriptions.c.user_id == sub.user_id)
                .values(**values)
            ).rowcount
            if not updated:
                conn.execute(subscriptions.insert().values(user_id=sub.user_id, **values))

    def last_due_times(self) -> dict[str, datetime]:
        """Per user, when their latest scheduled digest (of any state) was due.

        Digests asked for on demand do not count: they must not hide a scheduled one still missing.
        """
        query = (
            sa.select(digests.c.user_id, sa.func.max(digests.c.created_at))
            .where(digests.c.digest_key.not_like("%/now-%"))
            .group_by(digests.c.user_id)
        )
        with self.engine.connect() as conn:
            return {user_id: _utc(at) for user_id, at in conn.execute(query)}

    # the delivery ledger: outcomes reported by notify
    def mark_sent(self, digest_key: str, message_id: str, now: datetime) -> bool:
        """The digest reached the mail server; False when the key is unknown (user deleted)."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    digests.update()
                    .where(digests.c.digest_key == digest_key)
                    .values(
                        state="sent",
                        reason=None,
                        retry_at=None,
                        message_id=message_id,
                        updated_at=now,
                    )
                ).rowcount
                > 0
            )

    def mark_failed(
        self,
        digest_key: str,
        reason: str,
        attempts: int | None,
        retry_at: datetime | None,
        now: datetime,
    ) -> bool:
        """A failed attempt: due again from ``retry_at``, or given up (its papers released).

        A report about an older attempt (``attempts`` counts notify's tries; None: whatever the
        attempt), or one arriving after the digest was sent, changes nothing: reports may arrive
        out of order or twice.
        """
        key = digests.c.digest_key == digest_key
        open_states = digests.c.state.in_(("due", "sending"))
        values: dict[str, Any] = {"reason": reason, "updated_at": now}
        if retry_at is not None:
            values |= {"state": "due", "retry_at": retry_at}
        else:
            values |= {"state": "failed", "retry_at": None}
        query = digests.update().where(key, open_states)
        if attempts is not None:
            query = query.where(digests.c.attempts <= attempts)
            values["attempts"] = attempts
        with self.engine.begin() as conn:
            changed = conn.execute(query.values(**values)).rowcount
            if changed and retry_at is None:
                # Never read: these papers may go in a later digest.
                conn.execute(sent_papers.delete().where(sent_papers.c.digest_key == digest_key))
        return changed > 0

    def deliveries(self, user_id: str, limit: int = 100) -> list[DigestRecord]:
        """The user's digests, newest first, each with its state, reason and papers."""
        query = (
            sa.select(digests)
            .where(digests.c.user_id == user_id)
            .order_by(digests.c.created_at.desc(), digests.c.digest_key.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            DigestRecord(
                digest_key=row.digest_key,
                state="sending" if row.state == "published" else row.state,
                reason=row.reason,
                due_at=_utc(row.created_at),
                updated_at=_utc(row.updated_at) if row.updated_at else None,
                attempts=row.attempts or 0,
                papers=list((row.event or {}).get("papers", [])),
            )
            for row in rows
        ]

    def user_of_digest(self, digest_key: str) -> str | None:
        query = sa.select(digests.c.user_id).where(digests.c.digest_key == digest_key)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def digest_paper(self, digest_key: str, paper_id: str) -> dict[str, Any] | None:
        """One paper of a recorded digest (for the feedback page to name it)."""
        query = sa.select(digests.c.event).where(digests.c.digest_key == digest_key)
        with self.engine.connect() as conn:
            event = conn.execute(query).scalar()
        for paper in (event or {}).get("papers", []):
            if paper.get("paper_id") == paper_id:
                return dict(paper)
        return None

    # one-shot links
    def link_used(self, token_id: str) -> bool:
        query = sa.select(used_links.c.token_id).where(used_links.c.token_id == token_id)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def use_link(self, token_id: str, user_id: str, purpose: str, now: datetime) -> bool:
        """Record that a one-shot link acted; False when it had already."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    used_links.insert().values(
                        token_id=token_id, user_id=user_id, purpose=purpose, used_at=now
                    )
                )
        except IntegrityError:
            return False
        return True


def _subscription(
    user: User, row: Any | None, defaults: Schedule, prefix: str = ""
) -> Subscription:
    def col(name: str) -> Any:
        return getattr(row, prefix + name)

    if row is None:
        schedule = replace(defaults, frequency=user.frequency)
        return Subscription(user.id, schedule, starts_at=user.created_at)
    schedule = Schedule(
        frequency=user.frequency,
        timezone=col("timezone"),
        send_hour=col("send_hour"),
        weekday=col("weekday"),
        paused=bool(col("paused")),
        send_empty=bool(col("send_empty")),
    )
    return Subscription(
        user.id,
        schedule,
        starts_at=_utc(col("starts_at")),
        status=col("status"),
        bounces=col("bounces"),
    )
