"""A lean HTTP/1.1 load generator: closed-loop clients on keep-alive connections, on loopback.

Written on raw asyncio streams because the client shares the server's two cores: httpx costs
several times more CPU per request, which would be taken from the server being measured.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)  # seconds, measured requests only
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Milliseconds."""
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, headers: str
) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    else:
        await reader.readexactly(length)
    return status


async def closed_loop(
    port: int,
    path: Callable[[], str],
    *,
    clients: int,
    seconds: float,
    warmup: float = 2.0,
    max_requests: int | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> Load:
    """``clients`` connections, each sending its next request as soon as the last one answered.

    Requests that finish during the first ``warmup`` seconds are not counted.
    """
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    load = Load()
    started = time.perf_counter()
    measure_from = started + warmup
    deadline = measure_from + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                if max_requests is not None and len(load.latencies) >= max_requests:
                    return
                sent = time.perf_counter()
                status = await _request(reader, writer, path(), head)
                done = time.perf_counter()
                if sent >= measure_from:
                    load.latencies.append(done - sent)
                    load.statuses[status] = load.statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = time.perf_counter() - max(measure_from, started)
    return load


async def one_request(port: int, path: str, headers: Sequence[tuple[str, str]] = ()) -> float:
    """Seconds for one request on a new connection; raises unless it answers 200."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.perf_counter()
        status = await _request(reader, writer, path, head)
        seconds = time.perf_counter() - started
    finally:
        writer.close()
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}")
    return seconds


async def metric(port: int, name: str) -> float | None:
    """The value of the unlabelled metric ``name`` on ``/metrics`` (None when not exported)."""

    def read() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    for line in (await asyncio.to_thread(read)).splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


async def wait_for_metric(port: int, name: str, timeout: float = 600) -> float:
    """Seconds until the metric ``name`` on ``/metrics`` is exported and non-zero."""
    started = time.perf_counter()
    while not await metric(port, name):
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{name} stayed 0 for {timeout:.0f} s")
        await asyncio.sleep(0.5)
    return time.perf_counter() - started


def picker(items: Sequence[str], template: str, seed: int = 0) -> Callable[[], str]:
    rng = random.Random(seed)
    return lambda: template.format(rng.choice(items))


def cycler(items: Sequence[str], template: str) -> Callable[[], str]:
    """Each item in turn, then again from the first."""
    turn = itertools.cycle(items)
    return lambda: template.format(next(turn))


async def wait_until_up(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: see its log")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        try:
            if await _request(reader, writer, "/healthz", "") == 200:
                return
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.2)
    raise TimeoutError(f"nothing answered on port {port} within {timeout:.0f} s")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (a graceful stop), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def spawn(command: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A benchmark server from the repo root, its output in ``log``; stop it with ``stop``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(command), cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=out
        )


def python() -> str:
    return sys.executable
