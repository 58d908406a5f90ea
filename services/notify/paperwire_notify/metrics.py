"""notify's Prometheus metrics, built on the registry of one app."""

from __future__ import annotations

from email.message import EmailMessage

from prometheus_client import CollectorRegistry, Counter, Histogram

from paperwire_notify.mailer import Mailer, PermanentSendError, SendError


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "paperwire_notify_digests_sent_total",
            "Digests handed to the mail server.",
            registry=registry,
        )
        # reason: "permanent" (5xx) or "empty" (no papers). A bounded set, never the server's text.
        self.failed = Counter(
            "paperwire_notify_digests_failed_total",
            "Digests given up on, by reason.",
            ["reason"],
            registry=registry,
        )
        self.retried = Counter(
            "paperwire_notify_send_retries_total",
            "Sends that failed transiently; the digest stays pending for another try.",
            registry=registry,
        )
        self.duplicates = Counter(
            "paperwire_notify_duplicates_skipped_total",
            "Deliveries of an already sent digest, acknowledged without sending.",
            registry=registry,
        )
        # A send to a nearby relay takes milliseconds; a slow remote server, seconds.
        self.send_duration = Histogram(
            "paperwire_notify_send_duration_seconds",
            "Time to hand one digest to the mail server, failures included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        # kind: "transient" (4xx, timeouts, connection refused: the digest is retried) or
        # "permanent" (5xx: the server refused the recipient or the message; a bounce at send time).
        self.smtp_errors = Counter(
            "paperwire_notify_smtp_errors_total",
            "Sends the mail server refused or that failed on the way, by kind.",
            ["kind"],
            registry=registry,
        )
        for reason in ("permanent", "empty"):
            self.failed.labels(reason)  # exported at 0 before the first failure
        for kind in ("transient", "permanent"):
            self.smtp_errors.labels(kind)

    def metered(self, mailer: Mailer) -> Mailer:
        """``mailer`` counting its SMTP errors here, so the handler need not know about them."""
        return _MeteredMailer(mailer, self)


class _MeteredMailer:
    def __init__(self, inner: Mailer, metrics: NotifyMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def send(self, msg: EmailMessage) -> None:
        try:
            await self._inner.send(msg)
        except SendError as exc:
            kind = "permanent" if isinstance(exc, PermanentSendError) else "transient"
            self._metrics.smtp_errors.labels(kind).inc()
            raise

    async def ping(self) -> bool:
        return await self._inner.ping()
