"""`make demo` (= `paperwire demo`): offline, ends with a digest in the outbox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from paperwire.stack import free_port

pytestmark = pytest.mark.model


def test_demo_ends_with_a_digest_in_the_outbox(tmp_path: Path):
    data_dir = tmp_path / "data"
    demo = subprocess.run(
        [
            sys.executable,
            "-m",
            "paperwire",
            "--data-dir",
            str(data_dir),
            "demo",
            "--port",
            str(free_port(4)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "imported 150 sample papers" in demo.stdout
    assert "API: http://127.0.0.1:" in demo.stdout
    outbox = subprocess.run(
        [sys.executable, "-m", "paperwire", "--data-dir", str(data_dir), "outbox", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [mail] = json.loads(outbox.stdout)
    assert mail["to"] == "demo@paperwire.localhost"
    assert Path(mail["file"]).exists()
