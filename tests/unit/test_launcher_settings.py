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


def test_run_hands_the_whole_stack_the_host_asked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[tuple[Path, int, str]] = []

    async def run_single_node(data_dir: Path, api_port: int, host: str = "") -> None:
        started.append((data_dir, api_port, host))

    monkeypatch.setattr(launcher, "run_single_node", run_single_node)
    main(["--data-dir", str(tmp_path), "run", "--host", "0.0.0.0", "--port", "9000"])
    assert started == [(tmp_path, 9000, "0.0.0.0")]


def test_serving_every_interface_in_development_says_what_it_needs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_PUBLIC_URL", raising=False)
    with caplog.at_level("WARNING", logger=launcher.log.name):
        launcher._warn_if_exposed("0.0.0.0", "development", 8000)
    text = caplog.text
    assert "PAPERWIRE_ENV=production" in text and "NOTIFY_PUBLIC_URL is not set" in text
