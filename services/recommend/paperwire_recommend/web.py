"""recommend's web pages: subscribe, manage a subscription, and the pages behind an email's links.

Plain HTML forms that work without JavaScript. The pages reached from an email carry a signed token
(paperwire_shared.links) that names the user by id: manage, feedback, unsubscribe, and the personal
feeds. Mail scanners fetch every link of an email, so a GET changes nothing: unsubscribing takes a
POST (RFC 8058 one-click from the mail client, or the confirmation page's button), and a feedback
link opens a page that posts itself at once in a browser. A refused link (tampered, expired, meant
for another page, already used) changes nothing and gets a plain page saying why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from faststream.redis import RedisBroker
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from paperwire_recommend import feeds
from paperwire_recommend.delivery import (
    mail_status,
    resubscribed,
    unsubscribed,
    with_schedule,
)
from paperwire_recommend.digest import WEEKDAYS, Schedule, zone
from paperwire_recommend.encoder import EncoderUnavailable
from paperwire_recommend.recommender import Recommender
from paperwire_recommend.store import (
    DigestRecord,
    EmailTaken,
    Interest,
    Store,
    Subscription,
    User,
)
from paperwire_shared import streams
from paperwire_shared.events import FeedbackRecorded
from paperwire_shared.links import Link, LinkError, LinkSigner, Purpose, token_id

log = logging.getLogger(__name__)

EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$"
PAPER_ID_PATTERN = r"^[A-Za-z0-9._:/-]{1,200}$"
MAX_INTERESTS = 20
SEEDS = "| seeds:"
FEEDBACK_REASONS = (None, "off-topic", "low quality")

# What a refused link's page says: (status, title, explanation).
LINK_PROBLEMS: dict[str, tuple[int, str, str]] = {
    "tampered": (
        400,
        "This link is not valid",
        "It may have been cut or changed on the way. Try opening it from the email again.",
    ),
    "expired": (
        410,
        "This link has expired",
        "Links in emails work for a limited time; the links in your latest digest work.",
    ),
    "wrong purpose": (
        400,
        "This link is not meant for this page",
        "It was made for another page of paperwire. Open it from the email again.",
    ),
    "replayed": (
        409,
        "This link was already used",
        "It did what it says the first time; using it again changes nothing.",
    ),
}


@dataclass(frozen=True)
class Web:
    """What the pages need; create_app puts one on ``app.state.web``."""

    store: Store
    signer: LinkSigner
    broker: RedisBroker
    recommender: Recommender
    defaults: Schedule
    public_url: str | None = None


class UnknownUser(Exception):
    """A valid link for a user who has since deleted their data."""


def _web(request: Request) -> Web:
    return request.app.state.web


WebDep = Annotated[Web, Depends(_web)]
router = APIRouter(include_in_schema=False)


@functools.cache
def _templates() -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("paperwire_recommend", "templates"),
        autoescape=select_autoescape(["html", "xml"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=env)


@functools.cache
def timezones() -> tuple[str, ...]:
    # Only Area/Location names: the legacy aliases (US/Eastern, Etc/GMT+5) only confuse the list.
    names = {
        z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))
    }
    return ("UTC", *sorted(names))


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    response = _templates().TemplateResponse(request, name, context, status_code=status_code)
    # Pages behind personal links must not be kept by shared caches or leak their URL onward.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def message(
    request: Request,
    title: str,
    *paragraphs: str,
    links: Sequence[tuple[str, str]] = (),
    status_code: int = 200,
) -> Response:
    return page(
        request,
        "message.html",
        status_code,
        title=title,
        paragraphs=paragraphs,
        links=links,
    )


# Forms


class ScheduleForm(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    interests: str = Field(min_length=1, max_length=MAX_INTERESTS * 2_100)
    frequency: Literal["daily", "weekly", "off"] = "daily"
    weekday: int = Field(default=0, ge=0, le=6)
    send_hour: int = Field(default=6, ge=0, le=23)
    timezone: str = "UTC"
    max_papers: int = Field(default=10, ge=1, le=50)
    paused: bool = False
    send_empty: bool = False
    resubscribe: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value

    def schedule(self) -> Schedule:
        return Schedule(
            frequency=self.frequency,
            timezone=self.timezone,
            send_hour=self.send_hour,
            weekday=self.weekday,
            paused=self.paused,
            send_empty=self.send_empty,
        )


class SubscribeForm(ScheduleForm):
    email: str = Field(pattern=EMAIL_PATTERN, max_length=320)


FIELD_MESSAGES = {
    "email": "Enter your email address, like name@example.org.",
    "interests": "Write at least one interest.",
    "frequency": "Choose how often you want a digest.",
    "weekday": "Choose a day of the week.",
    "send_hour": "Choose an hour of the day.",
    "timezone": "Choose a time zone from the list.",
    "max_papers": "Choose between 1 and 50 papers.",
}


def form_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "form"
        errors.setdefault(name, FIELD_MESSAGES.get(name, error["msg"]))
    return errors


def _checkbox(value: Any) -> bool:
    return value in ("on", "true", "1", "yes")


async def _form_data(request: Request) -> dict[str, Any]:
    form = await request.form()
    data: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    for name in ("paused", "send_empty", "resubscribe"):
        data[name] = _checkbox(data.get(name))
    return data


def parse_interests(text: str, existing: Sequence[Interest] = ()) -> list[Interest]:
    """One interest per line: ``name: text``, or just the text; ``| seeds: id id`` adds papers.

    An interest left as it was keeps everything stored with it (its cached vector, say).
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("Write at least one interest.")
    if len(lines) > MAX_INTERESTS:
        raise ValueError(f"Write at most {MAX_INTERESTS} interests, one per line.")
    by_name = {i.name: i for i in existing}
    found: dict[str, Interest] = {}
    for line in lines:
        body, _, seeds = line.partition(SEEDS)
        seed_ids = list(dict.fromkeys(seeds.replace(",", " ").split()))
        name, colon, rest = body.partition(":")
        if not (colon and rest.strip()):
            # No "name:": the line is the interest's text and its name, or a name for seeds.
            name = body.strip().rstrip(":")
            rest = "" if seed_ids else name
        name = " ".join(name.split())[:80]
        interest_text = " ".join(rest.split())
        if len(interest_text) > 2_000:
            raise ValueError(f'The interest "{name}" is too long: at most 2,000 characters.')
        if any(not _is_paper_id(s) for s in seed_ids):
            raise ValueError(f'The seed papers of "{name}" must be arXiv ids like 2501.00001.')
        if not name or (not interest_text and not seed_ids):
            raise ValueError("Each line needs a description of the interest.")
        if name in found:
            raise ValueError(f'Two interests are named "{name}": give each its own name.')
        old = by_name.get(name)
        if old and old.text == (interest_text or None) and old.seed_paper_ids == seed_ids:
            found[name] = old
        elif old:
            # The page edits text and seeds only: keep the rules set through the API (keywords,
            # categories, authors); the text's cached vector no longer matches it.
            found[name] = dataclasses.replace(
                old, text=interest_text or None, seed_paper_ids=seed_ids, vector=None
            )
        else:
            found[name] = Interest(name, interest_text or None, seed_ids)
    return list(found.values())


def _is_paper_id(value: str) -> bool:
    return re.fullmatch(PAPER_ID_PATTERN, value) is not None


def interests_text(interests: Sequence[Interest]) -> str:
    lines = []
    for interest in interests:
        text = interest.text or ""
        line = text if text == interest.name else f"{interest.name}: {text}".rstrip(": ")
        if interest.seed_paper_ids:
            line += f" {SEEDS} {' '.join(interest.seed_paper_ids)}"
        lines.append(line)
    return "\n".join(lines)


def _form_of(user: User, sub: Subscription) -> dict[str, Any]:
    schedule = sub.schedule
    return {
        "interests": interests_text(user.interests),
        "frequency": schedule.frequency,
        "weekday": schedule.weekday,
        "send_hour": schedule.send_hour,
        "timezone": schedule.timezone,
        "max_papers": user.max_papers,
        "paused": schedule.paused,
        "send_empty": schedule.send_empty,
    }


# Links


def _now() -> datetime:
    return datetime.now(UTC)


def _base(web: Web, request: Request) -> str:
    return (web.public_url or str(request.base_url)).rstrip("/")


def manage_url(web: Web, user_id: str) -> str:
    return f"/manage/{web.signer.sign('manage', user_id, token_id('manage', user_id))}"


def feed_urls(web: Web, request: Request, user_id: str) -> dict[str, str]:
    token = web.signer.sign("feed", user_id, token_id("feed", user_id))
    base = f"{_base(web, request)}/feeds/{token}"
    return {"atom": f"{base}/atom.xml", "rss": f"{base}/rss.xml", "json": f"{base}/feed.json"}


async def _verified(web: Web, purpose: Purpose, token: str) -> tuple[Link, User, Subscription]:
    """The link's user and subscription; LinkError or UnknownUser when it must change nothing."""
    link = web.signer.verify(purpose, token)
    if purpose in ("feedback", "unsubscribe") and await asyncio.to_thread(
        web.store.link_used, link.token_id
    ):
        raise LinkError("replayed")
    user = await asyncio.to_thread(web.store.get_user, link.user_id)
    if user is None:
        raise UnknownUser()
    sub = await asyncio.to_thread(web.store.get_subscription, user, web.defaults)
    return link, user, sub


async def link_refused(request: Request, exc: Exception) -> Response:
    problem = exc.problem if isinstance(exc, LinkError) else "tampered"
    status, title, text = LINK_PROBLEMS[problem]
    log.info("refused a %s link: %s", request.url.path.split("/")[1], problem)
    return message(
        request,
        title,
        text,
        "Nothing was changed.",
        status_code=status,
        links=[("Subscribe", "/subscribe")],
    )


async def unknown_user(request: Request, exc: Exception) -> Response:
    return message(
        request,
        "No such subscription",
        "This subscription no longer exists: its data was deleted. Nothing was changed.",
        links=[("Subscribe again", "/subscribe")],
        status_code=404,
    )


# Subscribe


def _blank_form(web: Web) -> dict[str, Any]:
    return {
        "email": "",
        "interests": "",
        "frequency": "daily",
        "weekday": 0,
        "send_hour": web.defaults.send_hour,
        "timezone": web.defaults.timezone,
        "max_papers": 10,
        "paused": False,
        "send_empty": False,
    }


@router.get("/subscribe")
async def subscribe_page(request: Request, web: WebDep) -> Response:
    return page(
        request,
        "subscribe.html",
        title="Subscribe",
        form=_blank_form(web),
        errors={},
        submitted=False,
        weekdays=WEEKDAYS,
        timezones=timezones(),
    )


@router.post("/subscribe")
async def subscribe(request: Request, web: WebDep) -> Response:
    data = await _form_data(request)
    errors: dict[str, str] = {}
    try:
        form = SubscribeForm.model_validate(data)
    except ValidationError as exc:
        errors = form_errors(exc)
    interests: list[Interest] = []
    if "interests" not in errors:
        try:
            interests = parse_interests(str(data.get("interests", "")))
        except ValueError as exc:
            errors["interests"] = str(exc)
    if errors:
        return page(
            request,
            "subscribe.html",
            422,
            title="Subscribe",
            form=_blank_form(web) | data,
            errors=errors,
            submitted=True,
            weekdays=WEEKDAYS,
            timezones=timezones(),
        )
    now = _now()
    try:
        user = await asyncio.to_thread(
            web.store.create_user, form.email, form.frequency, form.max_papers, interests, now
        )
    except EmailTaken:
        return message(
            request,
            "Already subscribed",
            "This address already gets paperwire digests. Every digest has a link to manage "
            "your subscription.",
            status_code=409,
        )
    sub = Subscription(user.id, form.schedule(), starts_at=now)
    await asyncio.to_thread(web.store.save_subscription, sub, now)
    return message(
        request,
        "You are subscribed",
        _describe(sub.schedule),
        "Every digest has links to say which papers you liked, and to change or stop your "
        "subscription.",
        links=[("Manage your subscription", manage_url(web, user.id))],
        status_code=201,
    )


def _describe(schedule: Schedule) -> str:
    when = f"at {schedule.send_hour:02d}:00 ({schedule.timezone})"
    if schedule.frequency == "daily":
        return f"Your digest comes every arXiv announcement day {when}."
    if schedule.frequency == "weekly":
        return f"Your digest comes every {WEEKDAYS[schedule.weekday]} {when}."
    return "No digests are scheduled: read your papers in your personal feed."


# Manage


def _delivery_view(record: DigestRecord, sub: Subscription) -> dict[str, Any]:
    local = record.due_at.astimezone(sub.schedule.tz)
    due = local.strftime("%a %d %b %Y") if "/now-" not in record.digest_key else "on demand"
    state = {"due": "being prepared", "sending": "being sent"}.get(record.state, record.state)
    return {
        "due": due,
        "state": state,
        "reason": record.reason,
        "papers": [
            {"title": str(p.get("title", p.get("paper_id"))), "url": feeds.safe_url(p.get("url"))}
            for p in record.papers
        ]
        if record.state != "skipped"
        else [],
    }


async def _manage_page(
    request: Request,
    web: WebDep,
    token: str,
    user: User,
    sub: Subscription,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    records = await asyncio.to_thread(web.store.deliveries, user.id, 60)
    return page(
        request,
        "manage.html",
        422 if errors else 200,
        title="Your subscription",
        email=user.email,
        status=mail_status(sub),
        active=sub.active,
        form=form or _form_of(user, sub),
        errors=errors or {},
        notice=notice,
        weekdays=WEEKDAYS,
        timezones=timezones(),
        manage_url=f"/manage/{token}",
        delete_url=f"/manage/{token}/delete",
        feeds=feed_urls(web, request, user.id),
        deliveries=[_delivery_view(r, sub) for r in records],
    )


@router.get("/manage/{token}")
async def manage_page(request: Request, web: WebDep, token: str, saved: bool = False) -> Response:
    _, user, sub = await _verified(web, "manage", token)
    notice = "Your changes are saved." if saved else None
    return await _manage_page(request, web, token, user, sub, notice=notice)


@router.post("/manage/{token}")
async def manage(request: Request, web: WebDep, token: str) -> Response:
    _, user, sub = await _verified(web, "manage", token)
    data = await _form_data(request)
    errors: dict[str, str] = {}
    try:
        form = ScheduleForm.model_validate(data)
    except ValidationError as exc:
        errors = form_errors(exc)
    if "interests" not in errors:
        try:
            interests = parse_interests(str(data.get("interests", "")), user.interests)
        except ValueError as exc:
            errors["interests"] = str(exc)
    if errors:
        form_data = _form_of(user, sub) | data
        return await _manage_page(request, web, token, user, sub, form=form_data, errors=errors)
    now = _now()
    changed = with_schedule(sub, form.schedule(), now)
    if form.resubscribe:
        changed = resubscribed(changed, now)
    user.interests = interests
    user.frequency = form.frequency
    user.max_papers = form.max_papers
    await asyncio.to_thread(web.store.update_user, user, now)
    await asyncio.to_thread(web.store.save_subscription, changed, now)
    return RedirectResponse(f"/manage/{token}?saved=true", status_code=303)


@router.post("/manage/{token}/delete")
async def delete_my_data(request: Request, web: WebDep, token: str) -> Response:
    _, user, sub = await _verified(web, "manage", token)
    if not _checkbox((await _form_data(request)).get("confirm")):
        errors = {"confirm": "Tick the box to confirm that you want to delete your data."}
        return await _manage_page(request, web, token, user, sub, errors=errors)
    await asyncio.to_thread(web.store.delete_user, user.id)
    log.info("user %s deleted their data", user.id)
    return message(
        request,
        "Your data is deleted",
        "Your subscription, interests, feedback and delivery history are gone. No more digests "
        "will be sent.",
        links=[("Subscribe again", "/subscribe")],
    )


# Feedback


def _feedback_of(link: Link) -> tuple[str, str, str, str | None]:
    digest_key, paper_id = link.data.get("d"), link.data.get("p")
    kind, reason = link.data.get("k"), link.data.get("r")
    if (
        not isinstance(digest_key, str)
        or not isinstance(paper_id, str)
        or kind not in ("like", "dislike")
        or reason not in FEEDBACK_REASONS
    ):
        raise LinkError("tampered")
    return digest_key, paper_id, str(kind), reason


def _feedback_words(kind: str, reason: str | None, title: str) -> tuple[str, str]:
    """(the question before, the confirmation after) for one feedback link."""
    if kind == "like":
        return (
            f"Tell paperwire you like “{title}”?",
            f"Noted: you like “{title}”. More like it will come.",
        )
    if reason:
        return (
            f"Tell paperwire that “{title}” is {reason} for you?",
            f"Noted: “{title}” is {reason} for you. Fewer papers like it will come.",
        )
    return (
        f"Tell paperwire you want fewer papers like “{title}”?",
        f"Noted: fewer papers like “{title}” will come.",
    )


async def _paper_title(web: Web, digest_key: str, paper_id: str) -> str:
    paper = await asyncio.to_thread(web.store.digest_paper, digest_key, paper_id)
    title = " ".join(str((paper or {}).get("title") or paper_id).split())
    return title


@router.get("/feedback/{token}")
async def feedback_page(request: Request, web: WebDep, token: str) -> Response:
    link, _, _ = await _verified(web, "feedback", token)
    digest_key, paper_id, kind, reason = _feedback_of(link)
    question, _ = _feedback_words(kind, reason, await _paper_title(web, digest_key, paper_id))
    return page(
        request,
        "confirm.html",
        title="Your feedback",
        question=question,
        action=f"/feedback/{token}",
        button="Yes, record it",
        one_click=False,
        auto_submit=True,
    )


@router.post("/feedback/{token}")
async def feedback(request: Request, web: WebDep, token: str) -> Response:
    link, user, _ = await _verified(web, "feedback", token)
    digest_key, paper_id, kind, reason = _feedback_of(link)
    now = _now()
    event = FeedbackRecorded(
        # The token id: two concurrent clicks publish the same feedback, stored once.
        feedback_id=link.token_id,
        user_id=user.id,
        paper_id=paper_id,
        kind=kind,  # type: ignore[arg-type]
        reason=reason,
        recorded_at=now,
    )
    await web.broker.publish(event, stream=streams.FEEDBACK_RECORDED)
    await asyncio.to_thread(web.store.use_link, link.token_id, user.id, "feedback", now)
    _, done = _feedback_words(kind, reason, await _paper_title(web, digest_key, paper_id))
    return message(
        request,
        "Thank you",
        done,
        "It counts from your next digest.",
        links=[("Manage your subscription", manage_url(web, user.id))],
    )


# Unsubscribe (RFC 8058)


@router.get("/unsubscribe/{token}")
async def unsubscribe_page(request: Request, web: WebDep, token: str) -> Response:
    await _verified(web, "unsubscribe", token)
    return page(
        request,
        "confirm.html",
        title="Unsubscribe",
        question="Stop receiving paperwire digests at this address?",
        action=f"/unsubscribe/{token}",
        button="Unsubscribe",
        one_click=True,
        auto_submit=False,
    )


@router.post("/unsubscribe/{token}")
async def unsubscribe(request: Request, web: WebDep, token: str) -> Response:
    """One-click unsubscribe: the POST itself (RFC 8058 sends ``List-Unsubscribe=One-Click``)."""
    link, user, sub = await _verified(web, "unsubscribe", token)
    now = _now()
    await asyncio.to_thread(web.store.save_subscription, unsubscribed(sub), now)
    await asyncio.to_thread(web.store.use_link, link.token_id, user.id, "unsubscribe", now)
    log.info("user %s unsubscribed", user.id)
    return message(
        request,
        "You are unsubscribed",
        "No more digests will be sent to this address.",
        "Changed your mind? You can subscribe again from your subscription page.",
        links=[("Manage your subscription", manage_url(web, user.id))],
    )


# Feeds


async def _feed(request: Request, web: Web, token: str, name: str) -> feeds.Feed:
    _, user, sub = await _verified(web, "feed", token)
    if sub.schedule.frequency == "off":
        # No digests to mirror: the feed is the reader's digest, ranked when it is read.
        found = await web.recommender.recommend(user, min(feeds.MAX_ITEMS, user.max_papers * 3))
        items = [feeds.live_item(r.ranked, r.payload) for r in found]
    else:
        records = await asyncio.to_thread(web.store.deliveries, user.id, feeds.MAX_ITEMS)
        items = feeds.feed_items(records)
    base = _base(web, request)
    return feeds.Feed(
        title="paperwire: new papers for you",
        self_url=f"{base}/feeds/{token}/{name}",
        home_url=f"{base}/subscribe",
        updated=max((i.published for i in items), default=_now()),
        items=items,
    )


# One route per format would repeat the same lines three times: the format is the file name.
_FEED_FORMATS: dict[str, tuple[Callable[[feeds.Feed], str], str]] = {
    "atom.xml": (feeds.atom, "application/atom+xml"),
    "rss.xml": (feeds.rss, "application/rss+xml"),
    "feed.json": (lambda feed: json.dumps(feeds.json_feed(feed)), "application/feed+json"),
}


@router.get("/feeds/{token}/{name}")
async def personal_feed(request: Request, web: WebDep, token: str, name: str) -> Response:
    if name not in _FEED_FORMATS:
        return Response("no such feed: atom.xml, rss.xml or feed.json\n", status_code=404)
    render, media_type = _FEED_FORMATS[name]
    try:
        feed = await _feed(request, web, token, name)
    except EncoderUnavailable as exc:
        return Response(str(exc), status_code=503, headers={"Retry-After": "10"})
    return Response(render(feed), media_type=media_type)


def install(app: FastAPI, web: Web) -> None:
    """Serve the pages on ``app``: routes, and the plain pages for refused links."""
    app.state.web = web
    app.include_router(router)
    app.add_exception_handler(LinkError, link_refused)
    app.add_exception_handler(UnknownUser, unknown_user)
