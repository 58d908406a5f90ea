"""The signed-link contract of the emails: notify signs the links, recommend verifies them.

A link carries a user id, what it is for and which paper or digest it is about; never an email
address. Each purpose has its own salt (a feedback token can never unsubscribe) and its own expiry.
Keys rotate: the first of ``keys`` signs, every key verifies, so a new key can be put first while
links signed with the old one keep working until it is dropped. One-shot actions (feedback,
unsubscribe) carry a token id that the verifier records when the action is taken, so a replayed link
changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

log = logging.getLogger(__name__)

Purpose = Literal["feedback", "unsubscribe", "manage", "feed", "api"]

# How long a link works after it was signed. Feedback and manage links age with their email;
# unsubscribe links must keep working for as long as an old email may be opened (RFC 8058 asks for
# a working link); feed URLs live in feed readers for years, so they never expire.
MAX_AGE: dict[str, timedelta | None] = {
    "feedback": timedelta(days=60),
    "unsubscribe": timedelta(days=365),
    "manage": timedelta(days=30),
    "feed": None,
    # A user's REST API token (recommend's auth.py): valid until the user is deleted.
    "api": None,
}
# Actions a link may take only once: the verifier records the token id when it acts.
ONE_SHOT = frozenset({"feedback", "unsubscribe"})

DEVELOPMENT = "development"
KEY_FILE = "secret_key"
MIN_KEY_CHARS = 32
# A placeholder is a value made only of these words, digits and separators ("changeme",
# "your-secret-key-here", "todo"), never a random key that happens to contain "xxx" or "todo"
# somewhere (a substring test refused ~0.19% of secrets.token_urlsafe(48) keys).
_PLACEHOLDER = re.compile(
    r"(?:change|me|secret|key|example|placeholder|password|passwd|default|todo|fixme|your|here|"
    r"please|replace|insert|put|set|api|token|dev|test|x|[\d\s_.:,/+=-])+"
)

LinkProblem = Literal["tampered", "expired", "wrong purpose", "replayed"]


class LinkError(Exception):
    """A link that must change nothing: tampered, expired, meant for something else, or replayed."""

    def __init__(self, problem: LinkProblem) -> None:
        super().__init__(problem)
        self.problem: LinkProblem = problem


@dataclass(frozen=True)
class Link:
    """What a verified token says."""

    purpose: str
    user_id: str
    token_id: str
    data: dict[str, Any] = field(default_factory=dict)


def token_id(*parts: str) -> str:
    """A short id derived from what the link is about: the same link always gets the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class LinkSigner:
    """Signs and verifies link tokens with ``keys`` (newest first)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one secret key is needed to sign links")
        # itsdangerous signs with the last key of the list and verifies with all of them.
        self._keys = list(reversed(keys))

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._keys, salt=f"paperwire.{purpose}")

    def sign(self, purpose: Purpose, user_id: str, token: str, **data: Any) -> str:
        if purpose not in MAX_AGE:
            raise ValueError(f"unknown link purpose {purpose!r}")
        return str(self._serializer(purpose).dumps({"u": user_id, "j": token, **data}))

    def verify(self, purpose: Purpose, token: str) -> Link:
        """The link's content, or ``LinkError`` saying why it must be refused."""
        age = MAX_AGE[purpose]
        max_age = int(age.total_seconds()) if age is not None else None
        try:
            payload = self._serializer(purpose).loads(token, max_age=max_age)
        except SignatureExpired:
            raise LinkError("expired") from None
        except BadSignature:
            raise LinkError(self._other_purpose(purpose, token)) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("u"), str):
            raise LinkError("tampered")
        data = {k: v for k, v in payload.items() if k not in ("u", "j")}
        return Link(purpose, payload["u"], str(payload.get("j", "")), data)

    def _other_purpose(self, purpose: str, token: str) -> LinkProblem:
        """A genuine token of another purpose is told apart from a forged one, for a clearer page."""
        for other in MAX_AGE:
            if other == purpose:
                continue
            try:
                self._serializer(other).loads(token)
            except BadSignature:
                continue
            return "wrong purpose"
        return "tampered"


def is_placeholder(key: str) -> bool:
    """Too short, a few repeated characters, ``<...>``, or only words left in example configs."""
    lowered = key.strip().lower()
    return (
        len(lowered) < MIN_KEY_CHARS
        or len(set(lowered)) < 8
        or (lowered.startswith("<") and lowered.endswith(">"))
        or _PLACEHOLDER.fullmatch(lowered) is not None
    )


def parse_keys(configured: str | None, environment: str) -> tuple[str, ...]:
    """The configured keys (comma-separated, newest first); placeholders refused outside development."""
    keys = tuple(k.strip() for k in (configured or "").split(",") if k.strip())
    if environment != DEVELOPMENT:
        if not keys:
            raise ValueError(
                "PAPERWIRE_SECRET_KEY is required outside development: "
                'generate one with `python -c "import secrets; print(secrets.token_urlsafe(48))"`'
            )
        if any(is_placeholder(k) for k in keys):
            raise ValueError(
                f"PAPERWIRE_SECRET_KEY looks like a placeholder: use at least {MIN_KEY_CHARS} "
                "random characters"
            )
    return keys


def development_key(data_dir: Path, name: str = KEY_FILE) -> str:
    """The key kept in ``<data-dir>/<name>``, made on first use (single node, development).

    Two services of one node may race here: the key is written to a temporary file and linked into
    place, which fails if the other won, so both end up with the same key.
    """
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
            log.info("generated a development key in %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def signer_for(configured: str | None, environment: str, data_dir: Path) -> LinkSigner:
    """The signer a service uses: the configured keys, or the development key of ``data_dir``."""
    keys = parse_keys(configured, environment)
    return LinkSigner(keys or (development_key(data_dir),))
