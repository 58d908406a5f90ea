"""Runs paperwire: the whole single-node stack in one process, or one service against its URLs.

Single node: the embedded parts stand in for every URL left unset (Valkey with AOF, Qdrant Edge, a
SQLite file, the SMTP sink), then the four services run as four ASGI apps in one event loop, each on
its own port. One process because Qdrant Edge allows one per data dir; the services still talk only
through streams. Ctrl-C or SIGTERM stops the services, then the embedded parts: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn

from paperwire import stack

log = logging.getLogger(__name__)

SERVICES = ("ingest", "embed", "recommend", "notify")


@dataclass(frozen=True)
class Endpoints:
    """Where a running stack answers; written to ``<data-dir>/run/stack.json`` for the CLI."""

    redis_url: str
    api_url: str
    smtp_url: str
    outbox: str | None
    pid: int


def endpoints_file(data_dir: Path) -> Path:
    return data_dir / "run" / "stack.json"


def read_endpoints(data_dir: Path) -> Endpoints | None:
    """The endpoints of the stack running on ``data_dir``, or None when none runs."""
    path = endpoints_file(data_dir)
    if not path.exists():
        return None
    found = Endpoints(**json.loads(path.read_text()))
    try:
        os.kill(found.pid, 0)
    except ProcessLookupError:
        return None  # left by a stack that was killed
    return found


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the launcher stops all servers together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(app: Any, host: str, port: int) -> _Server:
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="warning")
    return _Server(config)


@contextlib.asynccontextmanager
async def _serve(servers: dict[str, _Server]) -> AsyncIterator[None]:
    tasks = {name: asyncio.create_task(s.serve(), name=name) for name, s in servers.items()}
    try:
        while not all(s.started for s in servers.values()):
            for name, task in tasks.items():
                if task.done():
                    raise RuntimeError(f"the {name} service failed to start: see the log above")
            await asyncio.sleep(0.05)
        yield
    finally:
        for server in servers.values():
            server.should_exit = True
        await asyncio.gather(*tasks.values(), return_exceptions=True)


def notify_settings(common: dict[str, Any], smtp_url: str, api_url: str) -> Any:
    """notify's settings in the whole stack: links in emails point at ``NOTIFY_PUBLIC_URL``
    where it is set (a reverse proxy's address), else at the stack's own API."""
    from paperwire_notify.config import Settings as NotifySettings

    settings = NotifySettings(**common, smtp_url=smtp_url)
    return settings if settings.public_url else settings.model_copy(update={"public_url": api_url})


LOOPBACK = "127.0.0.1"
LOCAL_ONLY = (LOOPBACK, "::1", "localhost")
ANY_ADDRESS = ("0.0.0.0", "::")


def _warn_if_exposed(host: str, environment: str, api_port: int) -> None:
    """Say what serving the API beyond this machine asks for."""
    if environment == "development":
        log.warning(
            "the API listens on %s:%d in development mode, with generated keys: for anything "
            "others can reach, set PAPERWIRE_ENV=production, PAPERWIRE_SECRET_KEY and "
            "PAPERWIRE_API_KEY (README, Security)",
            host,
            api_port,
        )
    if host in ANY_ADDRESS and not os.environ.get("NOTIFY_PUBLIC_URL"):
        log.warning(
            "NOTIFY_PUBLIC_URL is not set: links in emails point at this machine's own address "
            "(127.0.0.1), which readers elsewhere cannot open"
        )


@contextlib.asynccontextmanager
async def single_node(
    data_dir: Path, api_port: int = 8000, host: str = "127.0.0.1"
) -> AsyncIterator[Endpoints]:
    """The whole stack on ``data_dir``; URLs set in the environment replace embedded parts."""
    from paperwire_embed.app import create_app as embed_app
    from paperwire_embed.config import Settings as EmbedSettings
    from paperwire_ingest.app import create_app as ingest_app
    from paperwire_ingest.config import Settings as IngestSettings
    from paperwire_notify.app import create_app as notify_app
    from paperwire_recommend.app import create_app as recommend_app
    from paperwire_recommend.config import Settings as RecommendSettings
    from paperwire_shared.vectors import open_vector_store

    if (running := read_endpoints(data_dir)) is not None:
        raise RuntimeError(f"a stack already runs on {data_dir} (pid {running.pid})")
    data_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ
    with contextlib.ExitStack() as parts:
        redis_url = env.get("REDIS_URL")
        if not redis_url:
            valkey = stack.start_valkey(data_dir / "valkey")
            parts.callback(valkey.stop)
            redis_url = stack.valkey_url(valkey)
        smtp_url, outbox = env.get("SMTP_URL"), None
        if not smtp_url:
            outbox = data_dir / "outbox"
            sink = stack.start_smtp_sink(outbox)
            parts.callback(sink.stop)
            smtp_url = stack.smtp_sink_url(sink)
        common: dict[str, Any] = {"redis_url": redis_url, "data_dir": data_dir}
        recommend_settings = RecommendSettings(**common, host=host, port=api_port)
        # One vector store for embed and recommend: Qdrant Edge opens once per process.
        vectors = open_vector_store(recommend_settings.qdrant_url, recommend_settings.qdrant_path)
        parts.callback(vectors.close)
        # Only the API listens on ``host``; ingest, embed and notify stay on this machine.
        local = LOOPBACK if host in ANY_ADDRESS else host
        api_url = f"http://{local}:{api_port}"
        if host not in LOCAL_ONLY:
            _warn_if_exposed(host, recommend_settings.environment, api_port)
        apps = {
            "ingest": (ingest_app(IngestSettings(**common)), api_port + 1),
            "embed": (embed_app(EmbedSettings(**common), store=vectors), api_port + 2),
            "recommend": (recommend_app(recommend_settings, vectors=vectors), api_port),
            "notify": (
                notify_app(notify_settings(common, smtp_url, api_url)),
                api_port + 3,
            ),
        }
        servers = {
            name: _server(app, host if name == "recommend" else LOOPBACK, port)
            for name, (app, port) in apps.items()
        }
        async with _serve(servers):
            found = Endpoints(
                redis_url, api_url, smtp_url, str(outbox) if outbox else None, os.getpid()
            )
            path = endpoints_file(data_dir)
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(asdict(found)))
            parts.callback(path.unlink, missing_ok=True)
            log.info("paperwire is running: API %s/docs", api_url)
            if not recommend_settings.api_key:
                # Where, never what: the key itself stays out of the log.
                log.info("the API's admin key is in %s", data_dir / "api_key")
            yield found


async def until_stopped() -> None:
    """Returns on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_single_node(data_dir: Path, api_port: int, host: str = "127.0.0.1") -> None:
    async with single_node(data_dir, api_port, host):
        await until_stopped()
    log.info("paperwire stopped")


class SettingsError(Exception):
    """A service's settings are missing or invalid; the message names each one."""


def service_app(name: str) -> tuple[Any, int]:
    """One service's app and port, configured from the environment (what compose runs)."""
    from pydantic import ValidationError

    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}: one of {', '.join(SERVICES)}")
    app = importlib.import_module(f"paperwire_{name}.app")
    config = importlib.import_module(f"paperwire_{name}.config")
    try:
        settings = config.Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])} "
            + ("is not set" if error["type"] == "missing" else f"is invalid: {error['msg']}")
            for error in exc.errors()
        )
        raise SettingsError(
            f"{name} alone needs its settings from the environment: {problems} "
            "(README, Configuration; `paperwire run` without a service starts what is missing)"
        ) from exc
    return app.create_app(settings), settings.port


async def run_service(name: str, host: str) -> None:
    app, port = service_app(name)
    server = _server(app, host, port)
    serving = asyncio.create_task(server.serve())
    stopped = asyncio.create_task(until_stopped())
    await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
