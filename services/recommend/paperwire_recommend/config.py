"""Settings of the recommend service: API, user database, vector store, digest schedule."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # Shared settings come from their own names (REDIS_URL...); the rest from RECOMMEND_<FIELD>. The
    # prefix keeps by-name lookups (populate_by_name, for the launcher) off generic names like PORT.
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, env_prefix="RECOMMEND_"
    )

    redis_url: str = Field(validation_alias="REDIS_URL")
    qdrant_url: str | None = Field(default=None, validation_alias="QDRANT_URL")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(default=Path("data"), validation_alias="PAPERWIRE_DATA_DIR")
    host: str = Field(default="127.0.0.1", validation_alias="PAPERWIRE_API_HOST")
    port: int = Field(default=8000, validation_alias="PAPERWIRE_API_PORT")
    consumer: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # How often the scheduler looks for due digests; a digest is due once per period.
    scheduler_interval_seconds: float = Field(default=60, gt=0)
    # Hour (UTC) from which a day's digest is due: arXiv announces at 00:00 UTC.
    digest_hour_utc: int = Field(default=6, ge=0, le=23)
    # A user's first digest looks back this far; later ones start at the previous digest.
    first_digest_lookback_days: int = Field(default=7, ge=1)
    # Below this cosine a paper is not worth an email (all-MiniLM-L6-v2: unrelated papers ~0.0-0.2).
    min_score: float = 0.2
    # How long the API waits for embed to encode a query or an interest.
    encode_timeout_seconds: float = 20

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'paperwire.db'}"

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"
