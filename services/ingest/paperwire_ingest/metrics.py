"""The ingest service's Prometheus metrics, built on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from paperwire_ingest.importing import ImportReport, Progress


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
