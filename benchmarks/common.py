"""Helpers shared by the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "date": time.strftime("%Y-%m-%d"),
    }


def write_results(name: str, doc: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table: columns are (key, heading)."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def report(name: str, rows: list[dict], columns: list[tuple[str, str]] | None = None) -> Path:
    """Print the table and the machine, and write benchmarks/results/NAME.json."""
    print(table(rows, columns or [(k, k) for k in rows[0] if not k.endswith("_rounds_us")]))
    info = machine()
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}"
    )
    path = write_results(name, {"machine": info, "rows": rows})
    print(f"wrote {path}")
    return path
