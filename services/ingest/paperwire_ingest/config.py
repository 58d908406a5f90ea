"""Settings of the ingest service, read from the environment when Settings() is built."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # The environment uses the aliases (REDIS_URL, PAPERWIRE_DATA_DIR, INGEST_PORT); code may pass
    # field names (populate_by_name). The INGEST_ prefix keeps the by-name lookups from reading
    # generic variables: without it a stray DATA_DIR would move the inbox.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_prefix="INGEST_")

    redis_url: str = Field(validation_alias="REDIS_URL")
    data_dir: Path = Field(default=Path("data"), validation_alias="PAPERWIRE_DATA_DIR")
    port: int = Field(default=8001, validation_alias="INGEST_PORT")
    # Env INGEST_INBOX_POLL_SECONDS. A dropped file is imported within two polls: it must look
    # the same on two polls in a row, so one still being copied in is not imported half-written.
    inbox_poll_seconds: float = Field(default=5.0, gt=0)

    @property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"
