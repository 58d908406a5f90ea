"""The ingest service's Prometheus metrics, built on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from paperwire_ingest.importing import ImportReport, Progress
from paperwire_ingest.state import SourceStatus


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Label values are the few source names ("file", "hf-page"), never paths or ids.
        self.papers_ingested = Counter(
            "paperwire_papers_ingested_total",
            "Papers published to the ingested stream.",
            ["source"],
            registry=registry,
        )
        self.duplicates = Counter(
            "paperwire_ingest_duplicates_total",
            "Papers dropped because the same id and text were already published.",
            ["source"],
            registry=registry,
        )
        self.bad_lines = Counter(
            "paperwire_ingest_bad_lines_total",
            "Input lines skipped because they could not become a paper.",
            ["source"],
            registry=registry,
        )
        self.inbox_files = Counter(
            "paperwire_ingest_inbox_files_total",
            "Files taken from the inbox, by outcome: done, failed (moved aside) or retry (left).",
            ["outcome"],
            registry=registry,
        )

        # Label values are the network sources' names ("arxiv", "hf").
        self.source_runs = Counter(
            "paperwire_ingest_source_runs_total",
            "Runs of each network source, by outcome: ok, or failed (tried again later).",
            ["source", "outcome"],
            registry=registry,
        )
        self.source_last_success = Gauge(
            "paperwire_ingest_source_last_success_timestamp_seconds",
            "When each network source last ran without error.",
            ["source"],
            registry=registry,
        )

    def source_run(self, name: str, status: SourceStatus) -> None:
        """Count one run of a network source, as the poller recorded it."""
        if status.failures:
            self.source_runs.labels(name, "failed").inc()
            return
        self.source_runs.labels(name, "ok").inc()
        self.papers_ingested.labels(name).inc(status.published)
        if status.last_success is not None:
            self.source_last_success.labels(name).set(status.last_success.timestamp())

    def recorder(self) -> Progress:
        """A progress hook for one import: counts as the import goes, so a file that fails
        part-way still counts what it published."""
        counted = [0, 0, 0]

        def record(report: ImportReport) -> None:
            now = [report.published, report.duplicates, len(report.errors)]
            published, duplicates, bad = (a - b for a, b in zip(now, counted, strict=True))
            self.papers_ingested.labels(report.source).inc(published)
            self.duplicates.labels(report.source).inc(duplicates)
            self.bad_lines.labels(report.source).inc(bad)
            counted[:] = now

        return record
