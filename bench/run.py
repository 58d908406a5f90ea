"""``python -m bench.run [--only PART,...] [--quick]``: run the benchmarks, print, write RESULTS.md.

Parts: embedding, pipeline, latency, fanout, memory. ``make bench`` runs them all (under 20 min on
the 2-core machine); ``--quick`` shrinks every size to check that the benchmarks run at all (its
figures are not written to RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import time
import traceback
from typing import Any

from bench import report

# Part name -> (title, full-size arguments, --quick arguments).
PARTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "embedding": (
        "1. Embedding throughput (real model, real arXiv texts)",
        {"papers": 192, "rounds": 3},
        {"papers": 12, "rounds": 2},
    ),
    "pipeline": (
        "2. Pipeline overhead: ingest to stored vector, stand-in encoder",
        {"papers": 15_000, "rounds": 2},
        {"papers": 1_000, "rounds": 1},
    ),
    "latency": (
        "3. Recommendation latency: 100k papers, 10k users, 32 concurrent clients",
        {"papers": 100_000, "users": 10_000, "seconds": 20.0},
        {"papers": 5_000, "users": 500, "seconds": 3.0},
    ),
    "fanout": (
        "4. Digest fan-out: the day's 2,000 new papers ranked for every user",
        {"budget_s": 36.0},
        {"budget_s": 3.0},
    ),
    "memory": (
        "5. Memory: peak RSS of each service with 100k papers",
        {"papers": 100_000, "users": 10_000},
        {"papers": 5_000, "users": 500},
    ),
}


def run_part(key: str, quick: bool) -> report.Part:
    title, full, small = PARTS[key]
    part = report.Part(
        key=key, title=title, started=report.now(), load_before=report.load_average()
    )
    module = importlib.import_module(f"bench.{key}")
    started = time.perf_counter()
    try:
        result = module.run(part, **(small if quick else full))
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except Exception as exc:  # one broken part must not lose the others' figures
        traceback.print_exc()
        part.note(f"FAILED: {type(exc).__name__}: {exc}")
    part.seconds = time.perf_counter() - started
    part.load_after = report.load_average()
    return part


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--only", default="", help=f"comma-separated parts: {', '.join(PARTS)}")
    args.add_argument("--quick", action="store_true", help="tiny sizes; RESULTS.md untouched")
    args.add_argument("-v", "--verbose", action="store_true")
    opts = args.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if opts.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    keys = [k.strip() for k in opts.only.split(",") if k.strip()] or list(PARTS)
    unknown = [k for k in keys if k not in PARTS]
    if unknown:
        args.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    m = report.machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['versions']}")
    started = time.perf_counter()
    parts = []
    for key in keys:
        print(f"\nrunning {key}...", flush=True)
        part = run_part(key, opts.quick)
        report.print_part(part)
        parts.append(part)
    print(f"\nall done in {time.perf_counter() - started:.0f} s")
    if not opts.quick:
        report.save(parts, list(PARTS))
        print(f"written: {report.RESULTS_MD.relative_to(report.BENCH_DIR.parent)}")
    failed = [p.key for p in parts if any(n.startswith("FAILED") for n in p.notes)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
