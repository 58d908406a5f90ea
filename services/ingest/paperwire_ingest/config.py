"""Settings of the ingest service, read from the environment when Settings() is built."""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SourceName = Literal["arxiv", "hf"]

# An arXiv category: an archive ("hep-th", "cs"), optionally with a subject class (".LG", ".CO").
_CATEGORY = re.compile(r"[a-z]+(?:-[a-z]+)*(?:\.[A-Za-z]+(?:-[A-Za-z]+)*)?")


def _comma_list(value: object) -> object:
    # Env values are comma lists ("cs.LG,cs.CL"), not the JSON pydantic-settings expects.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


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

    # Network sources polled by the service (INGEST_SOURCES=arxiv,hf). None by default, so a
    # new install stays offline until someone chooses to follow arXiv.
    sources: Annotated[list[SourceName], NoDecode] = []
    # INGEST_ARXIV_CATEGORIES=cs.LG,cs.CL: the feeds read every announcement day.
    arxiv_categories: Annotated[list[str], NoDecode] = []
    # arXiv announces Sunday to Thursday at 20:00 New York time and rebuilds its feeds at
    # midnight: the daily poll runs at this New York time, Monday to Friday.
    arxiv_poll_time: time = time(0, 30)
    # Hugging Face upvotes move all day: the listings of the last `hf_days` days are read again
    # every `hf_poll_minutes`, so popularity follows them.
    hf_poll_minutes: float = Field(default=60.0, gt=0)
    hf_days: int = Field(default=3, ge=1, le=31)
    # A failed run is tried again after this long; the service itself never stops for a source.
    source_retry_minutes: float = Field(default=15.0, gt=0)

    # Where each source is read; only these hosts are ever contacted, over https.
    arxiv_rss_url: str = "https://rss.arxiv.org/rss/"
    arxiv_api_url: str = "https://export.arxiv.org/api/query"
    arxiv_oai_url: str = "https://oaipmh.arxiv.org/oai"
    hf_api_url: str = "https://huggingface.co/api/daily_papers"
    # arXiv's terms: at most one request every 3 seconds, one connection, across all its hosts.
    arxiv_interval_seconds: float = Field(default=3.0, ge=3.0)
    http_timeout_seconds: float = Field(default=60.0, gt=0)
    # An OAI-PMH page of 1,000 arXivRaw records is ~3 MB; nothing we read needs more than this.
    http_max_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    user_agent: str = "paperwire/0.1 (paper recommender; polite harvester)"

    _split_sources = field_validator("sources", "arxiv_categories", mode="before")(_comma_list)

    @field_validator("arxiv_categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        bad = [category for category in value if not _CATEGORY.fullmatch(category)]
        if bad:
            raise ValueError(f"not arXiv categories: {', '.join(bad)} (e.g. cs.LG, hep-th)")
        return list(dict.fromkeys(value))

    @field_validator("arxiv_rss_url", "arxiv_api_url", "arxiv_oai_url", "hf_api_url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{value}: sources are read over https only")
        return value

    @model_validator(mode="after")
    def _arxiv_needs_categories(self) -> Settings:
        if "arxiv" in self.sources and not self.arxiv_categories:
            raise ValueError(
                "INGEST_SOURCES has arxiv: set INGEST_ARXIV_CATEGORIES (e.g. cs.LG,cs.CL)"
            )
        return self

    @property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"

    @property
    def arxiv_hosts(self) -> set[str]:
        """arXiv's hosts: one rate limit covers them all."""
        urls = (self.arxiv_rss_url, self.arxiv_api_url, self.arxiv_oai_url)
        return {urlsplit(url).hostname or "" for url in urls}
