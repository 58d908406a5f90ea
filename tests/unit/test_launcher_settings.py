"""How `paperwire run` configures services: missing settings named, NOTIFY_PUBLIC_URL honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from paperwire import launcher
from paperwire.cli import main


def test_a_service_run_alone_without_its_urls_names_each_missing_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("REDIS_URL", "SMTP_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--data-dir", str(tmp_path), "run", "notify"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "REDIS_URL is not set" in err and "SMTP_URL is not set" in err
    assert "Traceback" not in err


def test_the_whole_stack_links_emails_to_notify_public_url_where_it_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    common = {"redis_url": "redis://127.0.0.1:1/0", "data_dir": tmp_path}
    monkeypatch.delenv("NOTIFY_PUBLIC_URL", raising=False)
    own = launcher.notify_settings(common, "smtp://127.0.0.1:1", "http://127.0.0.1:8000")
    assert own.public_url == "http://127.0.0.1:8000"
    monkeypatch.setenv("NOTIFY_PUBLIC_URL", "https://papers.example.org")
    proxied = launcher.notify_settings(common, "smtp://127.0.0.1:1", "http://127.0.0.1:8000")
    assert proxied.public_url == "https://papers.example.org"
