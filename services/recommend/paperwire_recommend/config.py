"""Settings of the recommend service: API, user database, vector store, digest schedule."""

from __future__ import annotations

import os
import socket
from datetime import date
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paperwire_shared import links


class Settings(BaseSettings):
    # Shared settings come from their own names (REDIS_URL...); the rest from RECOMMEND_<FIELD>. The
    # prefix keeps by-name lookups (populate_by_name, for the launcher) off generic names like PORT.
    # hide_input_in_errors: a refused setting must not echo the secret key into a log.
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, env_prefix="RECOMMEND_", hide_input_in_errors=True
    )

    redis_url: str = Field(validation_alias="REDIS_URL")
    qdrant_url: str | None = Field(default=None, validation_alias="QDRANT_URL")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default=Path("data"), validation_alias="PAPERWIRE_DATA_DIR")
    host: str = Field(default="127.0.0.1", validation_alias="PAPERWIRE_API_HOST")
    port: int = Field(default=8000, validation_alias="PAPERWIRE_API_PORT")
    consumer: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # A pending entry with no heartbeat for this long is taken over by another consumer (a crashed
    # worker's); one that failed this many times, with the database up, is dead-lettered.
    reclaim_after_seconds: float = Field(default=60, gt=0)
    max_deliveries: int = Field(default=5, ge=1)
    # How often the scheduler looks for due digests; a digest is due once per period.
    scheduler_interval_seconds: float = Field(default=60, gt=0)
    # Send hour of a user who has not chosen one (their time zone is UTC until they choose one):
    # arXiv announces at 20:00 US Eastern, 00:00 or 01:00 UTC.
    digest_hour_utc: int = Field(default=6, ge=0, le=23)
    # Days on which arXiv announces nothing, beyond its yearly holidays (digest.arxiv_holidays),
    # as JSON: {"2026-12-24": "winter break"}.
    arxiv_extra_holidays: dict[date, str] = Field(default_factory=dict)
    # A scheduler that was down catches up at most this far back (each missed digest once).
    catch_up_days: int = Field(default=14, ge=1)
    # Consecutive bounced digests after which an address gets no more email.
    bounce_limit: int = Field(default=3, ge=1)
    # Signs the links in emails and feeds (notify signs with the same keys): comma-separated,
    # newest first, so keys rotate. Unset in development: a key kept in <data-dir>/secret_key.
    secret_key: str | None = Field(
        default=None, validation_alias="PAPERWIRE_SECRET_KEY", repr=False
    )
    # "development" accepts a generated key; anything else requires a real PAPERWIRE_SECRET_KEY.
    environment: str = Field(default=links.DEVELOPMENT, validation_alias="PAPERWIRE_ENV")
    # The admin key of the REST API (user management, every user's routes), sent as
    # `Authorization: Bearer <key>`. Unset in development: a key kept in <data-dir>/api_key.
    api_key: str | None = Field(default=None, validation_alias="PAPERWIRE_API_KEY", repr=False)
    # Requests per caller (API key, user token, else client address), in `limits` notation.
    rate_limit: str = "600/minute"
    # Request bodies above this are refused with 413 as they arrive, before any parsing: a user
    # with several interests and a few dozen seed papers takes a few KiB.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Base of absolute links (feeds, pages) when the API sits behind a proxy; else the request's.
    public_url: str | None = None
    # A user's first digest looks back this far; later ones start at the previous digest.
    first_digest_lookback_days: int = Field(default=7, ge=1)
    # Below this cosine a paper is not worth an email (all-MiniLM-L6-v2: unrelated papers ~0.0-0.2).
    min_score: float = 0.2
    # How long the API waits for embed to encode a query or an interest.
    encode_timeout_seconds: float = 20
    # Ranking models kept in memory and rebuilt in the background when older than this: the
    # whitened space (corpus statistics, slow to change) and co-saves (every user's library).
    space_refresh_seconds: float = Field(default=3600, gt=0)
    collaborative_refresh_seconds: float = Field(default=300, gt=0)
    # Each user's last recommendations are given again while still right (recommender.Answers):
    # this many users at most (~20 KB each at 10 papers), and no answer older than this.
    answer_cache_size: int = Field(default=2_000, ge=0)
    answer_max_age_seconds: float = Field(default=600, ge=0)
    # Papers sampled from the vector store to fit the whitened space (384 dims need ~800+).
    space_sample: int = Field(default=20_000, ge=1)
    # Threads numpy's BLAS may use for one matrix product (see app.py).
    blas_threads: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _no_placeholder_secret(self) -> Settings:
        links.parse_keys(self.secret_key, self.environment)
        if self.environment != links.DEVELOPMENT:
            if not self.api_key:
                raise ValueError(
                    "PAPERWIRE_API_KEY is required outside development: generate one with "
                    '`python -c "import secrets; print(secrets.token_urlsafe(48))"`'
                )
            if links.is_placeholder(self.api_key):
                raise ValueError(
                    "PAPERWIRE_API_KEY looks like a placeholder: use at least "
                    f"{links.MIN_KEY_CHARS} random characters"
                )
        return self

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'paperwire.db'}"

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"
