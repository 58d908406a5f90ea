"""Settings of the ingest service, read from the environment when Settings() is built."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # populate_by_name: code and tests may pass data_dir=..., port=...; the environment uses the
    # aliases (PAPERWIRE_DATA_DIR, INGEST_PORT).
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    redis_url: str
    data_dir: Path = Field(default=Path("data"), validation_alias="PAPERWIRE_DATA_DIR")
    port: int = Field(default=8001, validation_alias="INGEST_PORT")
    # Files dropped in data_dir/inbox are picked up within two polls (a file must look the same on
    # two polls in a row, so one still being copied is not imported half-written).
    inbox_poll_seconds: float = Field(
        default=5.0, gt=0, validation_alias="INGEST_INBOX_POLL_SECONDS"
    )

    @property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"
