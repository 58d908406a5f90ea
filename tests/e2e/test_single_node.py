"""The single-node stack as a user starts it: a paper file in, a personalised email out.

Runs the real `paperwire` command in subprocesses on a fresh data dir: embedded Valkey, Qdrant Edge,
SQLite, the SMTP sink and the real all-MiniLM-L6-v2 model. About a minute on 2 cores, most of it
embedding the 237 papers of the seed page.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest

from paperwire.stack import free_port
from tests.support.auth import admin_headers, bearer

pytestmark = pytest.mark.model

PEFT_WORDS = ("lora", "low-rank adapt", "adapter", "parameter-efficient", "peft")


def paperwire(data_dir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "paperwire", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` or run inside it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(cmdline)
    return found


def seed_papers(page: Path) -> dict[str, str]:
    """Title -> abstract of the saved Hugging Face page (for judging, not for the product)."""
    lines = page.read_text().split("\n")[2:]
    lines[0] = lines[0].removeprefix("Subscribe")
    return {" ".join(t.split()): a for t, a in zip(lines[0::2], lines[1::2], strict=False)}


def stack_log(data_dir: Path) -> Path:
    """Where the stack's output goes: a file, not a pipe nobody reads. A full pipe blocks the
    stack's logging, and with it the stack (it hung on stopping in CI once its log outgrew the
    pipe's 64 KiB)."""
    return data_dir.parent / "run.log"


@pytest.fixture
def running_stack(tmp_path: Path):
    data_dir = tmp_path / "data"
    port = free_port(4)
    with stack_log(data_dir).open("w") as log:  # the child keeps its own copy of the file
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "paperwire",
                "--data-dir",
                str(data_dir),
                "run",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, stack_log(data_dir).read_text()
        # stack.json appears once all four services are up: what the CLI looks for.
        if (data_dir / "run" / "stack.json").exists():
            assert httpx.get(f"{api}/readyz", timeout=5).status_code == 200
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the stack did not become ready in 120 s")
    yield data_dir, api, proc
    if proc.poll() is None:  # the test failed before stopping it: stop it as a user would
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_paper_file_in_personalised_email_out_and_nothing_left_behind(running_stack, shared_dir):
    data_dir, api, proc = running_stack
    page = shared_dir / "seed" / "hf-papers-page.txt"

    ingest = paperwire(data_dir, "ingest", str(page), "--wait")
    assert ingest.returncode == 0, ingest.stderr
    assert "237 papers published" in ingest.stdout

    email = "researcher@example.org"
    created = httpx.post(
        f"{api}/v1/users",
        json={
            "email": email,
            "interests": [
                {
                    "name": "PEFT",
                    "text": "parameter-efficient fine-tuning of large language models (LoRA and adapters)",
                }
            ],
            "max_papers": 5,
        },
        headers=admin_headers(data_dir),
    )
    assert created.status_code == 201, created.text
    # The API answers the user's own token, and nobody without a credential.
    user_id, token = created.json()["id"], created.json()["token"]
    mine = httpx.get(f"{api}/v1/users/{user_id}/schedule", headers=bearer(token), timeout=10)
    assert mine.status_code == 200, mine.text
    assert httpx.get(f"{api}/v1/users/{user_id}/schedule", timeout=10).status_code == 401

    digest = paperwire(data_dir, "digest", "--user", email, "--now")
    assert digest.returncode == 0, digest.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        outbox = json.loads(paperwire(data_dir, "outbox", "--json").stdout)
        if outbox:
            break
        time.sleep(0.5)
    [mail] = outbox
    assert mail["to"] == email
    message = message_from_bytes(Path(mail["file"]).read_bytes(), policy=policy.default)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()

    papers = seed_papers(page)
    sent = [title for title in papers if title in " ".join(text.split())]
    assert len(sent) == 5, text
    for title in sent:
        about = f"{title} {papers[title]}".lower()
        assert any(word in about for word in PEFT_WORDS), f"off-topic paper sent: {title}"
        assert title.split(":")[0] in html
    assert "matches your interest" in text and re.search(r"https?://", html)

    # A second digest right away never repeats a paper of the first.
    again = paperwire(data_dir, "digest", "--user", email, "--now")
    assert again.returncode == 0, again.stderr
    if "handed to notify" in again.stdout:
        deadline = time.monotonic() + 60
        while len(outbox) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            outbox = json.loads(paperwire(data_dir, "outbox", "--json").stdout)
        second = message_from_bytes(Path(outbox[-1]["file"]).read_bytes(), policy=policy.default)
        second_text = " ".join(second.get_body(("plain",)).get_content().split())
        assert not [t for t in sent if t in second_text]

    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, stack_log(data_dir).read_text()[-4000:]
    time.sleep(0.5)
    assert processes_using(data_dir) == []
    assert not (data_dir / "run" / "stack.json").exists()
