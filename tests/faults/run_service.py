"""Runs one paperwire service as its own process, for the fault tests: ``python -m tests.faults.run_service embed``.

Test-only. Settings come from the environment as in production (REDIS_URL, EMBED_..., NOTIFY_...);
embed gets stand-ins instead of the model and with a way to take Qdrant away:

- ``FAULTS_ENCODE_DELAY``: seconds each batch takes to encode;
- ``FAULTS_ENCODE_HOLD``: while this file exists, a batch waits before it is encoded once
  ``FAULTS_ENCODE_HOLD_AFTER`` texts (default 0) have been, and says so by creating
  ``<file>.holding`` (so a kill lands mid-batch, read and not acknowledged);
- ``FAULTS_ENCODE_LOG``: a file where each encoded text's hash is appended (what the model ran on);
- ``FAULTS_POISON``: text that makes the encoder raise (a paper no retry can fix);
- ``FAULTS_QDRANT_DOWN``: while this file exists, Qdrant does not answer.

No Qdrant server can be installed here and Qdrant Edge is in-process, so "Qdrant unreachable" is
simulated by the store wrapper below; Redis, the database and SMTP are taken away for real.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import uvicorn

from tests.fakes import HashingEncoder

if TYPE_CHECKING:  # notify's process never loads the vector store (qdrant-client: ~1 s)
    from paperwire_shared.vectors import Hit, StoredPaper, VectorStore


class StandInEncoder(HashingEncoder):
    """The hashing stand-in, slowed down, logging what it encodes, refusing the poison text."""

    def __init__(
        self,
        delay: float,
        log_file: Path | None,
        poison: str | None,
        hold: Path | None = None,
        hold_after: int = 0,
    ) -> None:
        super().__init__()
        self.delay, self.log_file, self.poison = delay, log_file, poison
        self.hold, self.hold_after = hold, hold_after

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.poison and any(self.poison in text for text in texts):
            raise ValueError("the model cannot encode this text")
        if self.hold is not None and sum(self.calls) >= self.hold_after and self.hold.exists():
            Path(f"{self.hold}.holding").touch()
            while self.hold.exists():
                time.sleep(0.01)
        time.sleep(self.delay)
        vectors = super().encode(texts)
        if self.log_file is not None:
            with self.log_file.open("a") as out:
                out.writelines(hashlib.sha256(t.encode()).hexdigest()[:16] + "\n" for t in texts)
        return vectors


class QdrantUnreachable(ConnectionError):
    pass


class OutageStore:
    """A vector store that stops answering while ``down_flag`` exists, like a server gone away."""

    def __init__(self, inner: VectorStore, down_flag: Path) -> None:
        self.inner, self.down_flag = inner, down_flag

    def _up(self) -> None:
        if self.down_flag.exists():
            raise QdrantUnreachable("qdrant unreachable (simulated outage)")

    def upsert(self, papers: Sequence[StoredPaper]) -> None:
        self._up()
        self.inner.upsert(papers)

    def get(self, paper_ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPaper]:
        self._up()
        return self.inner.get(paper_ids, with_vectors=with_vectors)

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        exclude: Collection[str] = (),
        published_since: float | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        self._up()
        return self.inner.search(
            vector, k, exclude=exclude, published_since=published_since, with_vectors=with_vectors
        )

    def embedded_since(self, since: float, limit: int) -> list[StoredPaper]:
        self._up()
        return self.inner.embedded_since(since, limit)

    def count(self) -> int:
        self._up()
        return self.inner.count()

    def ping(self) -> bool:
        return not self.down_flag.exists() and self.inner.ping()

    def close(self) -> None:
        self.inner.close()


def embed_app() -> tuple[Any, int, VectorStore]:
    from paperwire_embed.app import create_app
    from paperwire_embed.config import Settings
    from paperwire_shared.vectors import open_vector_store

    settings = Settings()
    env = os.environ
    log_file = Path(env["FAULTS_ENCODE_LOG"]) if env.get("FAULTS_ENCODE_LOG") else None
    encoder = StandInEncoder(
        float(env.get("FAULTS_ENCODE_DELAY", 0)),
        log_file,
        env.get("FAULTS_POISON"),
        Path(env["FAULTS_ENCODE_HOLD"]) if env.get("FAULTS_ENCODE_HOLD") else None,
        int(env.get("FAULTS_ENCODE_HOLD_AFTER", 0)),
    )
    inner = open_vector_store(settings.qdrant_url, settings.qdrant_path)
    store = OutageStore(inner, Path(env.get("FAULTS_QDRANT_DOWN", "/nonexistent")))
    return create_app(settings, encoder=encoder, store=store), settings.port, store


def notify_app() -> tuple[Any, int, None]:
    from paperwire_notify.app import create_app
    from paperwire_notify.config import Settings

    settings = Settings()
    return create_app(settings), settings.port, None


async def serve(name: str) -> None:
    app, port, store = {"embed": embed_app, "notify": notify_app}[name]()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    try:
        await uvicorn.Server(config).serve()  # until SIGTERM; SIGKILL ends everything at once
    finally:
        if store is not None:
            store.close()  # embed's app closes only a store it opened itself


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("service", choices=("embed", "notify"))
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {args.service}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(args.service))


if __name__ == "__main__":
    main()
