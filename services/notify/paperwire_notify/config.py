"""notify's settings, read from the environment when a Settings is built (never at import)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    # Shared settings come from their own names (REDIS_URL...); the rest from NOTIFY_<FIELD>. The
    # prefix keeps by-name lookups (populate_by_name, for the launcher) off generic names like PORT.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_prefix="NOTIFY_")

    redis_url: str = Field(validation_alias="REDIS_URL")
    data_dir: Path = Field(default=Path("data"), validation_alias="PAPERWIRE_DATA_DIR")
    # Defaults to the single-node SQLite file under data_dir (filled in below).
    database_url: str = Field(default="", validation_alias="DATABASE_URL")
    # Required: the single-node launcher passes its local sink's URL when SMTP_URL is unset.
    smtp_url: str = Field(validation_alias="SMTP_URL")
    mail_from: str = "paperwire <digest@paperwire.localhost>"
    # Base URL of the web/API, for links in the email; None leaves them out.
    public_url: str | None = None
    port: int = 8003
    consumer: str = Field(default_factory=_default_consumer)

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir}/paperwire.db"
        return self
