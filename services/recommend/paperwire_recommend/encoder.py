"""Text vectors for queries and interests, asked of the embed service over a stream.

recommend never loads the model itself (only embed pulls torch): it sends ``TextsToEncode`` and
waits for the ``TextsEncoded`` reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from faststream.redis import RedisBroker

from paperwire_shared import streams
from paperwire_shared.events import TextsEncoded, TextsToEncode


class EncoderUnavailable(Exception):
    """embed did not answer in time: the caller reports it (HTTP 503) and retries later."""


class TextEncoder(Protocol):
    async def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class RemoteEncoder:
    def __init__(self, broker: RedisBroker, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        try:
            reply = await self._broker.request(
                TextsToEncode(texts=tuple(texts)),
                stream=streams.TEXTS_TO_ENCODE,
                timeout=self._timeout,
            )
        except TimeoutError as exc:
            raise EncoderUnavailable(
                f"the embed service did not answer within {self._timeout:.0f} s"
            ) from exc
        encoded = TextsEncoded.model_validate(await reply.decode())
        return np.asarray(encoded.vectors, dtype=np.float32)
