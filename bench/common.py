"""What every benchmark here shares: sample summaries, a description of the machine, the failure type, SIGTERM
handling and where the JSON result goes."""

from __future__ import annotations

import json
import os
import platform
import signal
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


class BenchFailed(Exception):
    """Something that must work did not (counts as a benchmark failure)."""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so a benchmark's finally blocks clean up as on Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)


def write_result(result: dict[str, Any], output: Path) -> None:
    """The full result as JSON at ``output`` (its directory made if missing), and where it went."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON written to {output}")
