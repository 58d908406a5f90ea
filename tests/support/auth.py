"""Credentials for tests that call recommend's API in process."""

from __future__ import annotations

from pathlib import Path

from paperwire_recommend.auth import API_KEY_FILE


def admin_headers(data_dir: Path) -> dict[str, str]:
    """The admin key of a development app on ``data_dir`` (generated there when the app is made)."""
    return {"Authorization": f"Bearer {(data_dir / API_KEY_FILE).read_text().strip()}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
