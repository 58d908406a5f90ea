"""REST routes under /v1: users, recommendations, papers, on-demand digests."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from paperwire_recommend.digest import on_demand_key
from paperwire_recommend.encoder import EncoderUnavailable
from paperwire_recommend.recommender import Recommender
from paperwire_recommend.scheduler import Scheduler
from paperwire_recommend.store import EmailTaken, Interest, Store, User
from paperwire_shared.events import DigestDue

EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$"
PAPER_ID_PATTERN = r"^[A-Za-z0-9._:/-]{1,200}$"
Frequency = Literal["daily", "weekly", "off"]
PaperId = Annotated[str, Field(pattern=PAPER_ID_PATTERN)]


class InterestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    text: str | None = Field(default=None, min_length=1, max_length=2_000)
    seed_paper_ids: list[PaperId] = Field(default_factory=list, max_length=500)

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
            InterestOut(name=i.name, text=i.text, seed_paper_ids=i.seed_paper_ids)
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
    return [Interest(i.name, i.text, list(dict.fromkeys(i.seed_paper_ids))) for i in items]


def _unavailable(exc: EncoderUnavailable) -> HTTPException:
    return HTTPException(503, str(exc), headers={"Retry-After": "10"})


@router.post("/users", status_code=201, response_model=UserOut, tags=["users"])
async def create_user(body: UserIn, store: StoreDep) -> UserOut:
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
    return UserOut.of(user)


@router.get("/users", response_model=list[UserOut], tags=["users"])
async def list_users(
    store: StoreDep,
    email: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[UserOut]:
    if email is not None:
        user = await asyncio.to_thread(store.find_user, email)
        return [UserOut.of(user)] if user else []
    return [UserOut.of(u) for u in await asyncio.to_thread(store.list_users, limit, offset)]


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"])
async def get_user(user_id: str, store: StoreDep) -> UserOut:
    return UserOut.of(await _user_or_404(store, user_id))


@router.patch("/users/{user_id}", response_model=UserOut, tags=["users"])
async def update_user(user_id: str, body: UserPatch, store: StoreDep) -> UserOut:
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
async def delete_user(user_id: str, store: StoreDep) -> Response:
    if not await asyncio.to_thread(store.delete_user, user_id):
        raise HTTPException(404, f"no user {user_id}")
    return Response(status_code=204)


@router.get("/users/{user_id}/recommendations", response_model=list[ScoredPaperOut], tags=["users"])
async def recommendations(
    user_id: str,
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
async def send_digest_now(user_id: str, store: StoreDep, scheduler: SchedulerDep) -> DigestOut:
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
    paper_id: str, recommender: RecommenderDep, k: K = 10
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
async def get_paper(paper_id: str, recommender: RecommenderDep) -> PaperOut:
    found = await asyncio.to_thread(recommender.vectors.get, [paper_id])
    if not found:
        raise HTTPException(404, f"no paper {paper_id}")
    return PaperOut.of(found[0].payload)
