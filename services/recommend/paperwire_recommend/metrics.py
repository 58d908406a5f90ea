"""The recommend service's Prometheus metrics, built on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.digests_due = Counter(
            "paperwire_digests_due_total", "Digests ranked and handed to notify.", registry=registry
        )
        self.digests_skipped = Counter(
            "paperwire_digests_skipped_total",
            "Digests not sent because nothing was worth sending.",
            registry=registry,
        )
        self.papers_available = Counter(
            "paperwire_papers_available_total",
            "PaperEmbedded events seen: papers that became recommendable.",
            registry=registry,
        )
        self.feedback = Counter(
            "paperwire_feedback_total", "Feedback recorded, by kind.", ["kind"], registry=registry
        )
