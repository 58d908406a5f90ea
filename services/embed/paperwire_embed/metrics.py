"""The embed service's Prometheus metrics, built on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.papers_embedded = Counter(
            "paperwire_papers_embedded_total",
            "Papers whose text went through the model.",
            registry=registry,
        )
        self.papers_reused = Counter(
            "paperwire_papers_embedding_reused_total",
            "Papers stored again without the model: same text already embedded.",
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "paperwire_embed_batch_seconds",
            "Time to encode one batch of papers.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
            registry=registry,
        )
