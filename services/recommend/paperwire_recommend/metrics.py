"""The recommend service's Prometheus metrics, built on a registry of its own."""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge

from paperwire_shared.events import FeedbackKind


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
        self.digests_sent = Counter(
            "paperwire_digests_sent_total",
            "Digests notify reported as handed to the mail server.",
            registry=registry,
        )
        self.digests_failed = Counter(
            "paperwire_digests_failed_total",
            "Digests notify gave up on (a bounce, or retries exhausted).",
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
        # The denominator of click-through and like rates: feedback{kind} / papers recommended.
        self.papers_recommended = Counter(
            "paperwire_recommended_papers_total",
            "Papers put in digests handed to notify.",
            registry=registry,
        )
        self.digest_errors = Counter(
            "paperwire_digest_errors_total",
            "Digests that failed to build or hand over; each is tried again on the next tick.",
            registry=registry,
        )
        # Set to read recommend's state at each scrape (app.py).
        self.nearest_papers = Gauge(
            "paperwire_recommend_nearest_papers",
            "Papers whose nearest saved papers (for carried co-saves) recommend has found.",
            registry=registry,
        )
        self.catalogued_papers = Gauge(
            "paperwire_recommend_catalogued_papers",
            "Stored papers recommend holds in memory for ranking (catalogue.py); newer ones are "
            "read from the vector store per request.",
            registry=registry,
        )
        self.nearest_pass_done = Gauge(
            "paperwire_recommend_nearest_pass_done_timestamp_seconds",
            "When recommend last finished finding newly embedded papers' nearest saved papers "
            "(0: not yet since start).",
            registry=registry,
        )
        for kind in get_args(FeedbackKind):
            self.feedback.labels(kind)  # every kind exported at 0, so rates exist from the start
