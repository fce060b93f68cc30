"""What every benchmark here shares: sample summaries and a description of the machine."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def summary(values: list[float]) -> dict[str, float]:
    """Median, nearest-rank p90/p95, min, max and count ({} for no samples)."""
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

    return {
        "median": statistics.median(values),
        "p90": pct(90),
        "p95": pct(95),
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(values),
    }


def machine(**tools: str) -> dict[str, Any]:
    """The machine and commit a result was measured on, plus the given tool versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **tools,
        "commit": commit.stdout.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_at_end": os.getloadavg(),
    }


def first_line(*cmd: str) -> str:
    """The first line a tool prints for its version."""
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False).stdout.split("\n", 1)[0].strip()
