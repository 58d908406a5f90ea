"""`paperwire demo`: the whole stack offline, a bundled sample of arXiv papers in, a digest out.

The sample is 150 arXiv cs papers of 2025-2026 (arXiv metadata is CC0), so it runs in about a
minute on a laptop CPU, most of it embedding.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from paperwire import stack
from paperwire.launcher import single_node
from paperwire.progress import wait_until_embedded

SAMPLE = Path(__file__).with_name("sample-papers.jsonl")
DEMO_USER: dict[str, Any] = {
    "email": "demo@paperwire.localhost",
    "interests": [
        {
            "name": "efficient LLM fine-tuning",
            "text": "parameter-efficient fine-tuning of large language models with LoRA and adapters",
        },
        {
            "name": "3D scenes",
            "text": "Gaussian splatting for 3D scene reconstruction and rendering",
        },
    ],
    "frequency": "daily",
    "max_papers": 8,
}


async def wait_for_mail(outbox: Path, count: int, timeout: float = 60) -> stack.OutboxMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = stack.read_outbox(outbox)
        if len(messages) > count:
            return messages[-1]
        await asyncio.sleep(0.2)
    raise TimeoutError("the digest did not reach the outbox in time")


async def run_demo(data_dir: Path, port: int) -> None:
    from paperwire_ingest.importing import import_files
    from paperwire_recommend.auth import client_headers

    print(f"starting paperwire on {data_dir} ...")
    async with single_node(data_dir, port) as node:
        if node.outbox is None:
            raise RuntimeError("the demo reads the local outbox: unset SMTP_URL")
        outbox = Path(node.outbox)
        before = len(stack.read_outbox(outbox))
        [report] = await import_files([SAMPLE], node.redis_url)
        print(f"imported {report.published} sample papers ({report.duplicates} already known)")
        await wait_until_embedded(node.redis_url)
        headers = client_headers(data_dir)
        async with httpx.AsyncClient(base_url=node.api_url, headers=headers, timeout=60) as api:
            found = (await api.get("/v1/users", params={"email": DEMO_USER["email"]})).json()
            if found:
                user = found[0]
            else:
                created = await api.post("/v1/users", json=DEMO_USER)
                created.raise_for_status()
                user = created.json()
            response = await api.post(f"/v1/users/{user['id']}/digest")
            response.raise_for_status()
            digest = response.json()
        if digest["state"] == "skipped":
            print(
                f"no digest: {digest['reason']} (the demo user already got every match; "
                f"remove {data_dir} to start over)"
            )
            return
        mail = await wait_for_mail(outbox, before)
        print(f"\nsent: {mail.message['Subject']}")
        for item in digest["papers"]:
            print(f"  {item['score']:.2f}  {item['paper']['title'][:90]}")
        print(f"\nread it: {outbox}/new/{mail.key}  (or `paperwire outbox`)")
        print(f"API: {node.api_url}/docs (serving while `make run` runs)")
