"""Operating a live single-node stack: `paperwire status` and every service's /metrics.

Runs the real `paperwire run` on a fresh data dir with the real model, drops a dozen papers in
the inbox (so the ingest service itself imports and counts them), sends one digest, then reads
the pipeline the way an operator does. About 30 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paperwire.stack import free_port
from paperwire_shared import streams
from tests.support.auth import admin_headers

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]
PAPERS = 12
SERVICE_PORTS = {"recommend": 0, "ingest": 1, "embed": 2, "notify": 3}  # offsets from the API port


def paperwire(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paperwire", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    data_dir, port = tmp_path / "data", free_port(4)
    log = (tmp_path / "stack.log").open("w")
    command = [sys.executable, "-m", "paperwire", "--data-dir", str(data_dir), "run"]
    # The inbox is polled twice before a file is taken: fast polls keep the test short.
    env = {**os.environ, "INGEST_INBOX_POLL_SECONDS": "0.3"}
    proc = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (data_dir / "run" / "stack.json").exists():
            assert proc.poll() is None, (tmp_path / "stack.log").read_text()
            assert time.monotonic() < deadline, "the stack did not start in 120 s"
            time.sleep(0.5)
        yield data_dir, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    ]


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    found = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
    assert found, f"no sample {name}{labels}"
    return sum(found)


def test_status_and_metrics_show_a_live_single_node_run(
    stack: tuple[Path, int], tmp_path: Path
) -> None:
    data_dir, api_port = stack
    lines = (ROOT / "paperwire" / "sample-papers.jsonl").read_text().splitlines()[:PAPERS]
    papers = tmp_path / "papers.jsonl"
    papers.write_text("\n".join(lines) + "\n")
    papers.rename(data_dir / "inbox" / "papers.jsonl")
    deadline = time.monotonic() + 60
    while True:
        shown = json.loads(paperwire(data_dir, "status", "--json").stdout)
        [ingested] = [s for s in shown["streams"] if s["stream"] == streams.PAPERS_INGESTED]
        [embed] = ingested["groups"]
        if ingested["length"] == PAPERS and embed["lag"] == embed["pending"] == 0:
            break
        assert time.monotonic() < deadline, f"not embedded in 60 s: {ingested}"
        time.sleep(0.5)

    email = "operator-test@example.org"
    created = httpx.post(
        f"http://127.0.0.1:{api_port}/v1/users",
        json={"email": email, "interests": [{"name": "learning", "text": "machine learning"}]},
        headers=admin_headers(data_dir),
        timeout=60,
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    digest = paperwire(data_dir, "digest", "--user", email, "--now")
    assert digest.returncode == 0, digest.stderr
    deadline = time.monotonic() + 60
    while not json.loads(paperwire(data_dir, "outbox", "--json").stdout):
        assert time.monotonic() < deadline, "no email in 60 s"
        time.sleep(0.5)

    # `paperwire status`: the papers went through embed, nothing waits, the digest is counted.
    shown = json.loads(paperwire(data_dir, "status", "--json").stdout)
    found = {s["stream"]: s for s in shown["streams"]}
    ingested = found[streams.PAPERS_INGESTED]
    assert ingested["length"] == PAPERS and ingested["last_entry_at"]
    [embed] = ingested["groups"]
    assert (embed["lag"], embed["pending"]) == (0, 0)
    assert found[streams.DEAD_LETTERS]["length"] == 0
    assert sum(shown["digests_today"].values()) == 1
    screen = paperwire(data_dir, "status")
    assert screen.returncode == 0 and streams.PAPERS_INGESTED in screen.stdout

    metrics = {name: scrape(api_port + offset) for name, offset in SERVICE_PORTS.items()}
    assert value(metrics["ingest"], "paperwire_papers_ingested_total", source="file") == PAPERS
    assert value(metrics["embed"], "paperwire_papers_embedded_total") == PAPERS
    handled = value(
        metrics["embed"], "faststream_received_processed_messages_total", status="acked"
    )
    assert handled >= 1
    assert value(metrics["recommend"], "http_requests_total", handler="/v1/users") >= 1
    assert value(metrics["recommend"], "paperwire_recommended_papers_total") >= 1
    deadline = time.monotonic() + 30
    while value(scrape(api_port + 3), "paperwire_notify_digests_sent_total") < 1:
        assert time.monotonic() < deadline, "notify never counted the digest it sent"
        time.sleep(0.5)
    for name, samples in metrics.items():
        length = value(samples, "paperwire_stream_length", stream=streams.PAPERS_INGESTED)
        assert length == PAPERS, name
        # Bounded labels only: no user, no address anywhere.
        for sample, labels, _ in samples:
            assert not {"user", "user_id", "email"} & labels.keys(), (name, sample, labels)
            text = " ".join(labels.values())
            assert "@" not in text and user_id not in text, (name, sample, labels)
