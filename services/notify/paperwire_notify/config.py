"""notify's settings, read from the environment when a Settings is built (never at import)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paperwire_shared import links


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    # Shared settings come from their own names (REDIS_URL...); the rest from NOTIFY_<FIELD>. The
    # prefix keeps by-name lookups (populate_by_name, for the launcher) off generic names like PORT.
    # hide_input_in_errors: a refused setting must not echo the secret key into a log.
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, env_prefix="NOTIFY_", hide_input_in_errors=True
    )

    redis_url: str = Field(validation_alias="REDIS_URL")
    data_dir: Path = Field(default=Path("data"), validation_alias="PAPERWIRE_DATA_DIR")
    # Defaults to the single-node SQLite file under data_dir (filled in below).
    database_url: str = Field(default="", validation_alias="DATABASE_URL")
    # Required: the single-node launcher passes its local sink's URL when SMTP_URL is unset.
    smtp_url: str = Field(validation_alias="SMTP_URL")
    mail_from: str = "paperwire <digest@paperwire.localhost>"
    # Base URL of the web/API, for links in the email; None leaves them out.
    public_url: str | None = None
    # Signs the links in emails (recommend verifies with the same keys): comma-separated, newest
    # first, so keys rotate. Unset in development: a key kept in <data-dir>/secret_key.
    secret_key: str | None = Field(
        default=None, validation_alias="PAPERWIRE_SECRET_KEY", repr=False
    )
    # "development" accepts a generated key; anything else requires a real PAPERWIRE_SECRET_KEY.
    environment: str = Field(default=links.DEVELOPMENT, validation_alias="PAPERWIRE_ENV")
    # An email never lists more papers than this, whatever the digest holds.
    max_papers: int = Field(default=50, ge=1)
    # A transient failure (SMTP 4xx, timeout, dropped connection) is retried at once after each of
    # these pauses, riding out a server restart; then the digest goes back to recommend, which
    # hands it over again after retry_base_seconds, doubling up to retry_max_seconds.
    send_retry_delays: tuple[float, ...] = (1.0, 5.0)
    retry_base_seconds: float = Field(default=60, gt=0)
    retry_max_seconds: float = Field(default=3600, gt=0)
    # Then it is given up (recorded as failed): 48 attempts an hour apart is two days of SMTP down.
    max_attempts: int = Field(default=48, ge=1)
    # A pending digest with no heartbeat for this long is taken over by another consumer (a crashed
    # worker's); one that failed this many times, with its dependencies up, is dead-lettered.
    reclaim_after_seconds: float = Field(default=60, gt=0)
    max_deliveries: int = Field(default=5, ge=1)
    # A ledger claim ("sending") older than this is presumed dead and taken over: longer than any
    # live delivery (the 30 s SMTP timeout, times the quick retries), or a digest could go twice.
    claim_timeout_seconds: float = Field(default=600, gt=0)
    port: int = 8003
    consumer: str = Field(default_factory=_default_consumer)

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir}/paperwire.db"
        links.parse_keys(self.secret_key, self.environment)  # refuses placeholders
        return self
