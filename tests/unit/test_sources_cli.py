"""`paperwire ingest arxiv|hf` refuse what they cannot run before touching Redis or the network."""

from __future__ import annotations

import pytest

from paperwire.cli import main


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing answers here: each case must fail before connecting.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    for name in ("INGEST_SOURCES", "INGEST_ARXIV_CATEGORIES"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ingest", "arxiv", "--from", "2026-11-02"], "name the categories"),
        (["ingest", "arxiv", "--categories", "cs.LG"], "--from DATE is required"),
        (
            ["ingest", "arxiv", "--categories", "cs.LG;rm", "--from", "2026-11-02"],
            "not arXiv categories",
        ),
        (
            [
                "ingest",
                "arxiv",
                "--categories",
                "cs.LG",
                "--from",
                "2026-11-03",
                "--until",
                "2026-11-02",
            ],
            "before --from",
        ),
    ],
)
def test_a_backfill_missing_what_it_needs_says_so_and_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)

    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
