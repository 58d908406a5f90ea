"""Benchmark results: one row per measurement, its baseline and target, rendered as tables.

``bench/RESULTS.md`` carries its own data (JSON in a comment at its end), so running one part
alone (``--only latency``) replaces that part's section and keeps the others, even in a fresh clone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
_DATA = "<!-- bench data, read back by bench/report.py to keep the other parts' sections:"
RESULTS_MD = BENCH_DIR / "RESULTS.md"


@dataclass
class Row:
    """One measured figure; ``ratio`` is always ours over the baseline's, in the row's unit."""

    name: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    target: str = ""
    met: bool | None = None  # None: no target on this row
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        return self.value / self.baseline_value  # type: ignore[operator]


@dataclass
class Part:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    started: str = ""
    load_before: tuple[float, ...] = ()
    load_after: tuple[float, ...] = ()

    def add(self, *args: Any, **kwargs: Any) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)


def machine() -> dict[str, str]:
    """What the figures were measured on; the load average shows how busy the machine was."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        memory = "unknown"
    versions = {}
    names = ("numpy", "torch", "sentence-transformers", "faststream", "qdrant-edge-py", "openvino")
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=BENCH_DIR,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=BENCH_DIR
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out + (" (with uncommitted changes)" if dirty else "")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_average() -> tuple[float, ...]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return ()


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{text} {unit}".strip()


def _verdict(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "MISSED"


def table(part: Part) -> list[list[str]]:
    head = ["measurement", "value", "baseline (same run)", "ratio", "target", "verdict", "note"]
    body = [
        [
            row.name,
            fmt(row.value, row.unit),
            f"{row.baseline}: {fmt(row.baseline_value, row.unit)}" if row.baseline else "",
            f"{row.ratio:.2f}x" if row.ratio is not None else "",
            row.target,
            _verdict(row),
            "" if row.note == "baseline" else row.note,
        ]
        for row in part.rows
    ]
    return [head, *body]


def print_part(part: Part) -> None:
    rows = table(part)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n== {part.title}  ({part.seconds:.0f} s, load {_load(part)})")
    for i, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    for text in part.notes:
        print(f"  * {text}")


def _load(part: Part) -> str:
    before = "/".join(str(x) for x in part.load_before) or "?"
    after = "/".join(str(x) for x in part.load_after) or "?"
    return f"{before} before, {after} after"


def stored_results() -> dict[str, Any]:
    """What RESULTS.md holds: ``{"parts": {key: part and machine}}``."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    start = text.find(_DATA)
    if start < 0:
        return {"parts": {}}
    data: dict[str, Any] = json.loads(text[start + len(_DATA) : text.index("-->", start)])
    return data


def save(parts: list[Part], order: list[str]) -> None:
    """Merge ``parts`` into RESULTS.md, keeping the sections of the parts not run."""
    stored = stored_results()
    for part in parts:
        stored["parts"][part.key] = {**asdict(part), "machine": machine()}
    RESULTS_MD.write_text(render(stored, order))


def render(stored: dict[str, Any], order: list[str]) -> str:
    lines = [
        "# paperwire benchmark results",
        "",
        "Written by `make bench` (`python -m bench.run`); each part can be rerun alone with",
        "`python -m bench.run --only PART` and replaces only its own section. Every figure is",
        "compared with a baseline measured in the same run, on the same machine, because this",
        "machine is shared and noisy: read the ratios, not the absolute numbers. The load average",
        "(1/5/15 min) before and after each part shows how busy the machine was. What each part",
        "measures, and what stands in the way of the missed targets: [README.md](README.md).",
        "",
    ]
    parts = stored["parts"]
    for key in [k for k in order if k in parts]:
        data = parts[key]
        part = Part(
            key=data["key"],
            title=data["title"],
            rows=[Row(**r) for r in data["rows"]],
            notes=data["notes"],
            seconds=data["seconds"],
            started=data["started"],
            load_before=tuple(data["load_before"]),
            load_after=tuple(data["load_after"]),
        )
        m = data["machine"]
        lines += [
            f"## {part.title}",
            "",
            f"Run {part.started}, {part.seconds:.0f} s, load {_load(part)}. Machine: {m['cpu']}, "
            f"{m['cores']} cores, {m['memory']}, {m['os']}, Python {m['python']} "
            f"({m['versions']}); commit {m['commit']}.",
            "",
        ]
        rows = table(part)
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|" + "---|" * len(rows[0]))
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
        lines.append("")
        lines += [f"- {text}" for text in part.notes]
        lines.append("")
    # "-->" would end the comment early; \u003e is the same JSON string.
    data = json.dumps(stored, separators=(",", ":")).replace("-->", "--\\u003e")
    lines += [_DATA, data, "-->", ""]
    return "\n".join(lines)
