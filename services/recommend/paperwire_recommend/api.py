"""REST routes under /v1: users, recommendations, papers, on-demand digests."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from paperwire_recommend.auth import AdminDep, CallerDep, UserDep
from paperwire_recommend.delivery import resubscribed, with_schedule
from paperwire_recommend.digest import Schedule, on_demand_key, zone
from paperwire_recommend.encoder import EncoderUnavailable
from paperwire_recommend.ranking import Knobs
from paperwire_recommend.recommender import Recommender
from paperwire_recommend.scheduler import Scheduler
from paperwire_recommend.store import EmailTaken, Interest, Store, Subscription, User
from paperwire_shared import streams
from paperwire_shared.events import DigestDue, FeedbackKind, FeedbackRecorded

EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$"
PAPER_ID_PATTERN = r"^[A-Za-z0-9._:/-]{1,200}$"
Frequency = Literal["daily", "weekly", "off"]
DislikeReason = Literal["off-topic", "low quality"]
PaperId = Annotated[str, Field(pattern=PAPER_ID_PATTERN)]
# Path parameters: user ids are UUIDs (store.create_user); paper ids as in bodies.
UserId = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,64}$")]
PaperIdPath = Annotated[str, Path(pattern=PAPER_ID_PATTERN)]
Term = Annotated[str, Field(min_length=1, max_length=100)]
Terms = Annotated[list[Term], Field(default_factory=list, max_length=50)]


class InterestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    text: str | None = Field(default=None, min_length=1, max_length=2_000)
    seed_paper_ids: list[PaperId] = Field(default_factory=list, max_length=500)
    # Rules (ranking.Rules): include keywords boost; include categories restrict; excludes remove;
    # a followed author's papers are boosted.
    include_keywords: Terms
    exclude_keywords: Terms
    include_categories: Terms
    exclude_categories: Terms
    authors: Terms

    @model_validator(mode="after")
    def _has_evidence(self) -> InterestIn:
        if not self.text and not self.seed_paper_ids:
            raise ValueError("an interest needs a text, seed_paper_ids, or both")
        return self


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    interests: list[InterestIn] = Field(min_length=1, max_length=20)
    frequency: Frequency = "daily"
    max_papers: int = Field(default=10, ge=1, le=50)


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, pattern=EMAIL_PATTERN, max_length=320)
    interests: list[InterestIn] | None = Field(default=None, min_length=1, max_length=20)
    frequency: Frequency | None = None
    max_papers: int | None = Field(default=None, ge=1, le=50)


class InterestOut(BaseModel):
    name: str
    text: str | None
    seed_paper_ids: list[str]
    include_keywords: list[str] = []
    exclude_keywords: list[str] = []
    include_categories: list[str] = []
    exclude_categories: list[str] = []
    authors: list[str] = []


class UserOut(BaseModel):
    id: str
    email: str
    interests: list[InterestOut]
    frequency: Frequency
    max_papers: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        interests = [
            InterestOut(
                name=i.name,
                text=i.text,
                seed_paper_ids=i.seed_paper_ids,
                include_keywords=i.include_keywords,
                exclude_keywords=i.exclude_keywords,
                include_categories=i.include_categories,
                exclude_categories=i.exclude_categories,
                authors=i.authors,
            )
            for i in user.interests
        ]
        return cls(
            id=user.id,
            email=user.email,
            interests=interests,
            frequency=user.frequency,  # type: ignore[arg-type]
            max_papers=user.max_papers,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class UserCreated(UserOut):
    token: str = Field(description="the user's API token (Authorization: Bearer ...)")


class TokenOut(BaseModel):
    token: str


class PaperOut(BaseModel):
    id: str
    title: str
    abstract: str = ""
    authors: list[str] = []
    categories: list[str] = []
    published: date | None = None
    url: str | None = None
    source: str | None = None
    popularity: int | None = None

    @classmethod
    def of(cls, payload: dict[str, Any]) -> PaperOut:
        return cls(id=payload["paper_id"], **{k: v for k, v in payload.items() if k in _PAPER})


_PAPER = set(PaperOut.model_fields) - {"id"}


class ScoredPaperOut(BaseModel):
    paper: PaperOut
    score: float
    reason: str


class DigestOut(BaseModel):
    digest_key: str
    state: Literal["due", "skipped"]
    reason: str | None = None
    papers: list[ScoredPaperOut] = []


def _recommender(request: Request) -> Recommender:
    return request.app.state.recommender


def _store(request: Request) -> Store:
    return request.app.state.store


def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


RecommenderDep = Annotated[Recommender, Depends(_recommender)]
StoreDep = Annotated[Store, Depends(_store)]
SchedulerDep = Annotated[Scheduler, Depends(_scheduler)]
K = Annotated[int, Query(ge=1, le=100)]

router = APIRouter(prefix="/v1")


async def _user_or_404(store: Store, user_id: str) -> User:
    user = await asyncio.to_thread(store.get_user, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    return user


def _interests(items: list[InterestIn]) -> list[Interest]:
    return [
        Interest(
            i.name,
            i.text,
            list(dict.fromkeys(i.seed_paper_ids)),
            include_keywords=list(dict.fromkeys(i.include_keywords)),
            exclude_keywords=list(dict.fromkeys(i.exclude_keywords)),
            include_categories=list(dict.fromkeys(i.include_categories)),
            exclude_categories=list(dict.fromkeys(i.exclude_categories)),
            authors=list(dict.fromkeys(i.authors)),
        )
        for i in items
    ]


def _unavailable(exc: EncoderUnavailable) -> HTTPException:
    return HTTPException(503, str(exc), headers={"Retry-After": "10"})


@router.post("/users", status_code=201, response_model=UserCreated, tags=["users"])
async def create_user(
    body: UserIn, store: StoreDep, request: Request, caller: AdminDep
) -> UserCreated:
    """Create a user; the answer holds their API token, shown this once."""
    now = datetime.now(UTC)
    try:
        user = await asyncio.to_thread(
            store.create_user,
            body.email,
            body.frequency,
            body.max_papers,
            _interests(body.interests),
            now,
        )
    except EmailTaken as exc:
        raise HTTPException(409, "a user with this email exists") from exc
    token = request.app.state.credentials.user_token(user.id)
    return UserCreated(**UserOut.of(user).model_dump(), token=token)


@router.post("/users/{user_id}/token", response_model=TokenOut, tags=["users"])
async def user_token(
    user_id: UserId, store: StoreDep, request: Request, caller: AdminDep
) -> TokenOut:
    """A fresh API token for the user (earlier ones keep working until the user is deleted)."""
    user = await _user_or_404(store, user_id)
    return TokenOut(token=request.app.state.credentials.user_token(user.id))


@router.get("/users", response_model=list[UserOut], tags=["users"])
async def list_users(
    store: StoreDep,
    caller: AdminDep,
    email: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[UserOut]:
    if email is not None:
        user = await asyncio.to_thread(store.find_user, email)
        return [UserOut.of(user)] if user else []
    return [UserOut.of(u) for u in await asyncio.to_thread(store.list_users, limit, offset)]


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"])
async def get_user(user_id: UserId, caller: UserDep, store: StoreDep) -> UserOut:
    return UserOut.of(await _user_or_404(store, user_id))


@router.patch("/users/{user_id}", response_model=UserOut, tags=["users"])
async def update_user(
    user_id: UserId, caller: UserDep, body: UserPatch, store: StoreDep
) -> UserOut:
    user = await _user_or_404(store, user_id)
    if body.email is not None:
        user.email = body.email
    if body.interests is not None:
        user.interests = _interests(body.interests)
    if body.frequency is not None:
        user.frequency = body.frequency
    if body.max_papers is not None:
        user.max_papers = body.max_papers
    try:
        await asyncio.to_thread(store.update_user, user, datetime.now(UTC))
    except EmailTaken as exc:
        raise HTTPException(409, "a user with this email exists") from exc
    return UserOut.of(user)


@router.delete("/users/{user_id}", status_code=204, tags=["users"])
async def delete_user(user_id: UserId, caller: UserDep, store: StoreDep) -> Response:
    if not await asyncio.to_thread(store.delete_user, user_id):
        raise HTTPException(404, f"no user {user_id}")
    return Response(status_code=204)


@router.get("/users/{user_id}/recommendations", response_model=list[ScoredPaperOut], tags=["users"])
async def recommendations(
    user_id: UserId,
    caller: UserDep,
    store: StoreDep,
    recommender: RecommenderDep,
    k: K = 10,
    since: Annotated[date | None, Query(description="only papers published on or after")] = None,
) -> list[ScoredPaperOut]:
    user = await _user_or_404(store, user_id)
    published_since = datetime.combine(since, time(), tzinfo=UTC).timestamp() if since else None
    try:
        found = await recommender.recommend(user, k, published_since)
    except EncoderUnavailable as exc:
        raise _unavailable(exc) from exc
    return [
        ScoredPaperOut(paper=PaperOut.of(r.payload), score=r.ranked.score, reason=r.ranked.reason)
        for r in found
    ]


@router.post("/users/{user_id}/digest", response_model=DigestOut, tags=["users"])
async def send_digest_now(
    user_id: UserId, caller: UserDep, store: StoreDep, scheduler: SchedulerDep
) -> DigestOut:
    """Rank and hand over this user's digest now, outside the schedule."""
    user = await _user_or_404(store, user_id)
    now = datetime.now(UTC)
    key = on_demand_key(user.id, now)
    try:
        result = await scheduler.send(user, key, now)
    except EncoderUnavailable as exc:
        raise _unavailable(exc) from exc
    if not isinstance(result, DigestDue):
        return DigestOut(digest_key=key, state="skipped", reason=result)
    papers = [
        ScoredPaperOut(
            paper=PaperOut(
                id=p.paper_id,
                title=p.title,
                abstract=p.abstract,
                authors=list(p.authors),
                url=p.url,
            ),
            score=p.score,
            reason=p.reason,
        )
        for p in result.papers
    ]
    return DigestOut(digest_key=key, state="due", papers=papers)


@router.get("/papers/search", response_model=list[ScoredPaperOut], tags=["papers"])
async def search_papers(
    recommender: RecommenderDep,
    caller: CallerDep,
    q: Annotated[str, Query(min_length=1, max_length=1_000)],
    k: K = 10,
) -> list[ScoredPaperOut]:
    try:
        vector = (await recommender.encoder.encode([q]))[0]
    except EncoderUnavailable as exc:
        raise _unavailable(exc) from exc
    hits = await asyncio.to_thread(recommender.vectors.search, vector, k)
    return [
        ScoredPaperOut(paper=PaperOut.of(h.payload), score=h.score, reason=f'matches "{q}"')
        for h in hits
    ]


@router.get("/papers/{paper_id:path}/similar", response_model=list[ScoredPaperOut], tags=["papers"])
async def similar_papers(
    paper_id: PaperIdPath, recommender: RecommenderDep, caller: CallerDep, k: K = 10
) -> list[ScoredPaperOut]:
    found = await asyncio.to_thread(recommender.vectors.get, [paper_id], with_vectors=True)
    if not found or found[0].vector is None:
        raise HTTPException(404, f"no paper {paper_id}")
    hits = await asyncio.to_thread(
        recommender.vectors.search, found[0].vector, k, exclude=[paper_id]
    )
    title = found[0].payload.get("title", paper_id)
    return [
        ScoredPaperOut(paper=PaperOut.of(h.payload), score=h.score, reason=f'similar to "{title}"')
        for h in hits
    ]


@router.get("/papers/{paper_id:path}", response_model=PaperOut, tags=["papers"])
async def get_paper(
    paper_id: PaperIdPath, recommender: RecommenderDep, caller: CallerDep
) -> PaperOut:
    found = await asyncio.to_thread(recommender.vectors.get, [paper_id])
    if not found:
        raise HTTPException(404, f"no paper {paper_id}")
    return PaperOut.of(found[0].payload)


# Schedule and delivery log


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frequency: Frequency = "daily"
    timezone: str = Field(default="UTC", max_length=64, description="an IANA time zone")
    send_hour: int = Field(default=6, ge=0, le=23, description="local hour of the digest")
    weekday: int = Field(default=0, ge=0, le=6, description="0 = Monday; weekly digests only")
    paused: bool = False
    send_empty: bool = Field(default=False, description="email even when nothing is new")
    max_papers: int = Field(default=10, ge=1, le=50)
    resubscribe: bool = Field(default=False, description="email again after unsubscribing")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value


class ScheduleOut(BaseModel):
    frequency: Frequency
    timezone: str
    send_hour: int
    weekday: int
    paused: bool
    send_empty: bool
    max_papers: int
    status: Literal["active", "unsubscribed", "suppressed"]
    bounces: int

    @classmethod
    def of(cls, user: User, sub: Subscription) -> ScheduleOut:
        s = sub.schedule
        return cls(
            frequency=s.frequency,  # type: ignore[arg-type]
            timezone=s.timezone,
            send_hour=s.send_hour,
            weekday=s.weekday,
            paused=s.paused,
            send_empty=s.send_empty,
            max_papers=user.max_papers,
            status=sub.status,  # type: ignore[arg-type]
            bounces=sub.bounces,
        )


class DeliveredPaper(BaseModel):
    paper_id: str
    title: str
    url: str | None = None
    reason: str = ""


class DeliveryOut(BaseModel):
    digest_key: str
    state: Literal["due", "sending", "sent", "skipped", "failed"]
    reason: str | None = Field(description="why skipped or failed; what the last attempt met")
    due_at: datetime
    updated_at: datetime | None
    attempts: int
    papers: list[DeliveredPaper]


def _defaults(request: Request) -> Schedule:
    return request.app.state.scheduler.defaults


@router.get("/users/{user_id}/schedule", response_model=ScheduleOut, tags=["users"])
async def get_schedule(
    user_id: UserId, caller: UserDep, store: StoreDep, request: Request
) -> ScheduleOut:
    user = await _user_or_404(store, user_id)
    sub = await asyncio.to_thread(store.get_subscription, user, _defaults(request))
    return ScheduleOut.of(user, sub)


@router.put("/users/{user_id}/schedule", response_model=ScheduleOut, tags=["users"])
async def put_schedule(
    user_id: UserId, caller: UserDep, body: ScheduleIn, store: StoreDep, request: Request
) -> ScheduleOut:
    """When and how the user's digests go out; digests restarting now are not backfilled."""
    user = await _user_or_404(store, user_id)
    sub = await asyncio.to_thread(store.get_subscription, user, _defaults(request))
    now = datetime.now(UTC)
    schedule = Schedule(
        frequency=body.frequency,
        timezone=body.timezone,
        send_hour=body.send_hour,
        weekday=body.weekday,
        paused=body.paused,
        send_empty=body.send_empty,
    )
    changed = with_schedule(sub, schedule, now)
    if body.resubscribe:
        changed = resubscribed(changed, now)
    await asyncio.to_thread(store.save_subscription, changed, now, max_papers=body.max_papers)
    user.frequency, user.max_papers = body.frequency, body.max_papers
    return ScheduleOut.of(user, changed)


@router.get("/users/{user_id}/deliveries", response_model=list[DeliveryOut], tags=["users"])
async def deliveries(
    user_id: UserId,
    caller: UserDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryOut]:
    """Every digest of the user, newest first: sent (with its papers), skipped or failed (why)."""
    await _user_or_404(store, user_id)
    records = await asyncio.to_thread(store.deliveries, user_id, limit)
    return [
        DeliveryOut(
            digest_key=r.digest_key,
            state=r.state,  # type: ignore[arg-type]
            reason=r.reason,
            due_at=r.due_at,
            updated_at=r.updated_at,
            attempts=r.attempts,
            papers=[
                DeliveredPaper(
                    paper_id=str(p.get("paper_id")),
                    title=str(p.get("title", "")),
                    url=p.get("url"),
                    reason=str(p.get("reason", "")),
                )
                for p in r.papers
            ],
        )
        for r in records
    ]


# Feedback and ranking knobs


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paper_id: PaperId
    kind: FeedbackKind
    reason: DislikeReason | None = Field(
        default=None,
        description='dislikes only: "off-topic" (similar papers go down too) or "low quality" '
        "(only this paper goes)",
    )
    feedback_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,64}$",
        description="set it to retry safely: the same id is recorded once",
    )

    @model_validator(mode="after")
    def _reason_is_for_dislikes(self) -> FeedbackIn:
        if self.reason is not None and self.kind != "dislike":
            raise ValueError("only a dislike takes a reason")
        return self


class FeedbackOut(BaseModel):
    feedback_id: str
    paper_id: str
    kind: FeedbackKind
    reason: str | None = None
    recorded_at: datetime


class KnobsIO(BaseModel):
    """Per-user ranking trade-offs, in standard deviations of relevance (0 turns one off)."""

    model_config = ConfigDict(extra="forbid")

    recency: float = Field(default=Knobs.recency, ge=0, le=5, description="fresher first")
    popularity: float = Field(default=Knobs.popularity, ge=0, le=5, description="trending first")
    diversity: float = Field(
        default=Knobs.diversity, ge=0, le=5, description="MMR: fewer near-duplicates"
    )


@router.post(
    "/users/{user_id}/feedback", status_code=201, response_model=FeedbackOut, tags=["users"]
)
async def record_feedback(
    user_id: UserId, caller: UserDep, body: FeedbackIn, store: StoreDep, request: Request
) -> FeedbackOut:
    """Like, save, open or dislike a paper; the next query or digest takes it into account.

    Liked and saved papers become evidence ("you liked ..."); a dislike is never shown again and,
    unless its reason is "low quality", pushes similar papers down.
    """
    await _user_or_404(store, user_id)
    event = FeedbackRecorded(
        feedback_id=body.feedback_id or uuid.uuid4().hex,
        user_id=user_id,
        paper_id=body.paper_id,
        kind=body.kind,
        reason=body.reason,
        recorded_at=datetime.now(UTC),
    )
    # Stored before answering, so the profile changes before the next request; the event tells
    # the other consumers (this service's own handler then finds it stored and does nothing).
    recorded = await asyncio.to_thread(store.record_feedback, event)
    if recorded:
        if (metrics := getattr(request.app.state, "metrics", None)) is not None:
            metrics.feedback.labels(event.kind).inc()
        await request.app.state.broker.publish(event, stream=streams.FEEDBACK_RECORDED)
    return FeedbackOut(**event.model_dump(include=set(FeedbackOut.model_fields)))


@router.get("/users/{user_id}/feedback", response_model=list[FeedbackOut], tags=["users"])
async def list_feedback(user_id: UserId, caller: UserDep, store: StoreDep) -> list[FeedbackOut]:
    """The user's feedback, oldest first."""
    await _user_or_404(store, user_id)
    rows = await asyncio.to_thread(store.feedback_of, user_id)
    return [FeedbackOut(**{k: row[k] for k in FeedbackOut.model_fields}) for row in rows]


@router.get("/users/{user_id}/ranking", response_model=KnobsIO, tags=["users"])
async def get_ranking(user_id: UserId, caller: UserDep, store: StoreDep) -> KnobsIO:
    await _user_or_404(store, user_id)
    return KnobsIO(**(await asyncio.to_thread(store.get_knobs, user_id) or {}))


@router.put("/users/{user_id}/ranking", response_model=KnobsIO, tags=["users"])
async def put_ranking(user_id: UserId, caller: UserDep, body: KnobsIO, store: StoreDep) -> KnobsIO:
    """How this user's recommendations trade relevance for recency, popularity and diversity."""
    await _user_or_404(store, user_id)
    await asyncio.to_thread(store.save_knobs, user_id, body.model_dump(), datetime.now(UTC))
    return body
