"""Test stand-ins for the adapters named in STYLE.md: fast, deterministic, no model, no network."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


class HashingEncoder:
    """Bag-of-words hashed into ``dim`` buckets: texts that share words get similar unit vectors."""

    name = "hashing-stand-in"

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim
        self.calls: list[int] = []  # batch sizes, to check nothing is encoded twice

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest())
                out[row, bucket % self.dim] += 1.0
            out[row, 0] += 1e-3  # an empty text still gets a unit vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class LocalTextEncoder:
    """recommend's TextEncoder without the embed service: the same hashing stand-in, in-process."""

    def __init__(self, encoder: HashingEncoder) -> None:
        self.encoder = encoder

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts)
