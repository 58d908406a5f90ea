"""Signed links: each misuse (tampered, expired, wrong purpose) is refused; keys rotate; no address."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from paperwire_shared.links import (
    LinkError,
    LinkSigner,
    development_key,
    parse_keys,
    signer_for,
    token_id,
)

KEY = "k" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"
NEW_KEY = "n" * 8 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SIGNED_AT = datetime(2026, 11, 27, 7, tzinfo=UTC)


def payload_of(token: str) -> dict:
    body = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_a_signed_link_verifies_with_its_content() -> None:
    signer = LinkSigner([KEY])
    token = signer.sign(
        "feedback", "user-1", token_id("a"), d="user-1/2026-11-27", p="2501.1", k="like"
    )

    link = signer.verify("feedback", token)

    assert (link.user_id, link.token_id) == ("user-1", token_id("a"))
    assert link.data == {"d": "user-1/2026-11-27", "p": "2501.1", "k": "like"}


def test_a_token_holds_the_user_id_and_never_an_email_address() -> None:
    token = LinkSigner([KEY]).sign("unsubscribe", "user-1", token_id("u"))

    assert payload_of(token) == {"u": "user-1", "j": token_id("u")}
    assert "@" not in token


# In the payload and in the signature (not its last character: base64 padding bits).
@pytest.mark.parametrize("position", [0, 10, -12, -5])
def test_a_tampered_token_is_refused(position: int) -> None:
    signer = LinkSigner([KEY])
    token = signer.sign("feedback", "user-1", "t1", k="like")
    flipped = "A" if token[position] != "A" else "B"
    tampered = token[:position] + flipped + token[position + 1 :]

    with pytest.raises(LinkError) as refused:
        signer.verify("feedback", tampered)
    assert refused.value.problem == "tampered"


def test_a_token_with_another_users_id_pasted_in_is_refused() -> None:
    signer = LinkSigner([KEY])
    token = signer.sign("unsubscribe", "user-1", "t1")
    _, stamp, signature = token.split(".")
    forged_body = base64.urlsafe_b64encode(b'{"u":"user-2","j":"t1"}').rstrip(b"=").decode()

    with pytest.raises(LinkError):
        signer.verify("unsubscribe", f"{forged_body}.{stamp}.{signature}")


def test_a_token_signed_with_an_unknown_key_is_refused() -> None:
    token = LinkSigner([NEW_KEY]).sign("manage", "user-1", "t1")

    with pytest.raises(LinkError):
        LinkSigner([KEY]).verify("manage", token)


def test_a_token_is_refused_for_another_purpose() -> None:
    signer = LinkSigner([KEY])
    feedback = signer.sign("feedback", "user-1", "t1", k="like")

    for purpose in ("unsubscribe", "manage", "feed"):
        with pytest.raises(LinkError) as refused:
            signer.verify(purpose, feedback)  # type: ignore[arg-type]
        assert refused.value.problem == "wrong purpose"


def test_a_token_expires_by_purpose() -> None:
    signer = LinkSigner([KEY])
    with time_machine.travel(SIGNED_AT, tick=False):
        feedback = signer.sign("feedback", "user-1", "t1", k="like")
        unsubscribe = signer.sign("unsubscribe", "user-1", "t2")
        feed = signer.sign("feed", "user-1", "t3")

    with time_machine.travel(SIGNED_AT + timedelta(days=59), tick=False):
        signer.verify("feedback", feedback)
    with time_machine.travel(SIGNED_AT + timedelta(days=61), tick=False):
        with pytest.raises(LinkError) as refused:
            signer.verify("feedback", feedback)
        assert refused.value.problem == "expired"
        signer.verify("unsubscribe", unsubscribe)  # works for a year
    with time_machine.travel(SIGNED_AT + timedelta(days=3_000), tick=False):
        signer.verify("feed", feed)  # feed readers keep their URL for years


def test_keys_rotate_new_key_signs_old_key_still_verifies() -> None:
    old = LinkSigner([KEY]).sign("manage", "user-1", "t1")
    rotated = LinkSigner([NEW_KEY, KEY])

    assert rotated.verify("manage", old).user_id == "user-1"
    fresh = rotated.sign("manage", "user-1", "t2")
    assert LinkSigner([NEW_KEY]).verify("manage", fresh).user_id == "user-1"
    with pytest.raises(LinkError):
        LinkSigner([KEY]).verify("manage", fresh)


@pytest.mark.parametrize(
    "key", ["changeme", "secret-key-please-change-me-0123456789", "x" * 40, ""]
)
def test_placeholder_or_missing_keys_are_refused_outside_development(key: str) -> None:
    with pytest.raises(ValueError, match="PAPERWIRE_SECRET_KEY"):
        parse_keys(key, "production")
    parse_keys(key, "development")  # accepted: development uses a generated key when none is set


def test_a_development_key_is_made_once_and_shared_by_the_services_of_a_node(
    tmp_path: Path,
) -> None:
    first = development_key(tmp_path)
    second = development_key(tmp_path)

    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    token = signer_for(None, "development", tmp_path).sign("manage", "user-1", "t1")
    assert signer_for(None, "development", tmp_path).verify("manage", token).user_id == "user-1"


def test_the_same_action_always_gets_the_same_token_id() -> None:
    assert token_id("feedback", "k", "p1", "like") == token_id("feedback", "k", "p1", "like")
    assert token_id("feedback", "k", "p1", "like") != token_id("feedback", "k", "p1", "dislike")
