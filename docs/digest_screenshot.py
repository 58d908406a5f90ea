"""Renders a sample digest with notify's real renderer and screenshots its HTML part in Chromium.

Run: .venv/bin/python docs/digest_screenshot.py  (needs Debian's chromium; writes docs/digest.png)
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from playwright.async_api import async_playwright

from paperwire_notify.render import render_digest
from paperwire_shared.events import DigestDue, RankedPaper
from paperwire_shared.links import LinkSigner

ROOT = Path(__file__).resolve().parents[1]


def sample_digest() -> DigestDue:
    lines = (ROOT / "paperwire" / "sample-papers.jsonl").read_text().splitlines()
    papers = [json.loads(line) for line in lines[:40]]
    chosen = [papers[0], *[p for p in papers[1:] if "language model" in p["abstract"].lower()][:2]]
    reasons = [
        'matches your interest "3D scenes" (gaussian, splatting, dynamic)',
        'matches your interest "efficient LLM tuning" (adapter, fine-tuning)',
        'close to your seed paper "LoRA: Low-Rank Adaptation of Large Language Models"',
    ]
    return DigestDue(
        digest_key="demo-user/2026-11-27",
        user_id="demo-user",
        email="ada@example.org",
        papers=tuple(
            RankedPaper(
                paper_id=p["id"],
                title=p["title"],
                abstract=p["abstract"],
                authors=tuple(p.get("authors") or ("A. Author",)),
                url=p.get("url") or f"https://arxiv.org/abs/{p['id']}",
                score=0.6,
                reason=reason,
            )
            for p, reason in zip(chosen, reasons, strict=False)
        ),
        created_at=datetime(2026, 11, 27, 7, tzinfo=UTC),
    )


async def main() -> None:
    msg = render_digest(
        sample_digest(),
        sender="paperwire <digest@paperwire.localhost>",
        base_url="http://127.0.0.1:8000",
        signer=LinkSigner(["screenshot-only-key-" + "x1y2z3" * 6]),
    )
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        page = await browser.new_page(viewport={"width": 680, "height": 400})
        await page.set_content(html)
        await page.screenshot(path=str(ROOT / "docs" / "digest.png"), full_page=True)
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
