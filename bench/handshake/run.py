# mypy: disallow-untyped-calls=False
# (grpcio-tools writes no types for the *_pb2_grpc stubs)
"""Start-up benchmark: the plugin against the floor (bench/handshake/floor_server.py).

Nomad launches a driver plugin three times at agent boot, so per launch we measure, interleaved run
by run so both share the machine's noise:
  handshake   exec to the go-plugin handshake line read from stdout (perf_counter)
  rss / pss   VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) after 1 s idle
  shutdown    GRPCController/Shutdown call until the process has exited (go-plugin SIGKILLs after 2 s)
and, once per run, the agent-boot pattern (three launches with Nomad's calls) against three bare floor
cycles (spawn, handshake, Shutdown, exit). Results are reported, never asserted: the exit status is
non-zero only when a launch actually fails (no handshake, no exit within 2 s, an RPC error).

    .venv/bin/python bench/handshake/run.py [--runs N | --quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import msgpack

from nomad_rkt_driver.protocol.gen import (
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
)

REPO: Final = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import machine, summary  # noqa: E402

RESULT: Final = REPO / "bench" / "results" / "handshake.json"
COMMANDS: Final = {
    "floor": [sys.executable, str(REPO / "bench" / "handshake" / "floor_server.py")],
    "plugin": [str(Path(sys.executable).parent / "nomad-rkt-driver")],
}
PYCACHE: Final = REPO / "bench" / "results" / "pycache"
ENV: dict[str, str] = {
    **os.environ,
    "NOMAD_PLUGIN_MAGIC_COOKIE": "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
    "PLUGIN_PROTOCOL_VERSIONS": "2",
}
HANDSHAKE_TIMEOUT_S: Final = 30.0
EXIT_TIMEOUT_S: Final = 2.0  # go-plugin's Kill() waits this long after Shutdown, then SIGKILL
IDLE_S: Final = 1.0
GOAL_RATIO: Final = 1.3  # issue goal: handshake time and idle RSS within 1.3x the floor
GOALS: Final = ("handshake_s", "rss_mib")
METRICS: Final = {
    "handshake_s": "exec -> handshake (s)",
    "rss_mib": "idle RSS (MiB)",
    "pss_mib": "idle PSS (MiB)",
    "shutdown_s": "Shutdown -> exit (s)",
}


class LaunchFailed(Exception):
    """A launch did not behave like a go-plugin server (counts as a benchmark failure)."""


@dataclass
class Launch:
    """A launched server process (floor or plugin) with its handshake done."""

    proc: subprocess.Popen[bytes]
    target: str
    handshake_s: float

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def stop(self, channel: grpc.Channel) -> float:
        """go-plugin's Kill(): Shutdown, close the connection, wait for exit. Returns Shutdown -> exit."""
        start = time.perf_counter()
        grpc_controller_pb2_grpc.GRPCControllerStub(channel).Shutdown(grpc_controller_pb2.Empty(), timeout=2.0)
        channel.close()
        if not wait_exit(self.proc, EXIT_TIMEOUT_S):
            raise LaunchFailed(f"pid {self.proc.pid} still running {EXIT_TIMEOUT_S} s after Shutdown")
        return time.perf_counter() - start


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for exit with no polling granularity (pidfd), then reap."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if ready:
        proc.wait()
    return bool(ready)


def _drain(stream: Any, sink: bytearray) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        sink.extend(chunk)
        del sink[:-65536]  # keep the tail for failure reports


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    fd, data, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise LaunchFailed(f"no handshake line within {timeout} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise LaunchFailed(f"stdout closed before a handshake line (exit status {proc.wait()})")
        data += chunk
    return data.split(b"\n", 1)[0]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        return f"{exc.code()} {exc.details()}"
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def launched(name: str) -> Iterator[Launch]:
    """Spawn as Nomad does (stdin /dev/null, stdout/stderr pipes) and read the handshake line."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        COMMANDS[name],
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    stderr = bytearray()
    drain = threading.Thread(target=_drain, args=(proc.stderr, stderr), daemon=True)
    drain.start()
    try:
        line = _read_line(proc, HANDSHAKE_TIMEOUT_S)
        handshake_s = time.perf_counter() - start
        parts = line.decode().strip().split("|")
        if len(parts) < 5 or parts[:2] != ["1", "2"] or parts[2] != "unix" or parts[4] != "grpc":
            raise LaunchFailed(f"bad handshake line {line!r}")
        yield Launch(proc, f"unix:{parts[3]}", handshake_s)
    except Exception as exc:
        if proc.poll() is not None:
            drain.join(timeout=1.0)  # let the drain catch the last words
        last = stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise LaunchFailed(f"{name}: {_reason(exc)}" + (f" (last stderr line: {last[0]})" if last else "")) from exc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(timeout=1.0)
        if proc.stdout is not None:
            proc.stdout.close()


def _proc_kib(path: str, key: str) -> float | None:
    with contextlib.suppress(OSError), open(path) as lines:
        for line in lines:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return None


def measure(name: str) -> dict[str, float]:
    """One launch: handshake time, memory after IDLE_S, Shutdown -> exit."""
    with launched(name) as server:
        channel = server.channel()
        try:
            grpc.channel_ready_future(channel).result(timeout=2.0)  # connect outside the timed Shutdown
        except grpc.FutureTimeoutError:
            raise LaunchFailed(f"no gRPC connection to {server.target} within 2 s") from None
        time.sleep(IDLE_S)
        sample = {"handshake_s": server.handshake_s}
        rss = _proc_kib(f"/proc/{server.proc.pid}/status", "VmRSS")
        pss = _proc_kib(f"/proc/{server.proc.pid}/smaps_rollup", "Pss")
        if rss is not None:
            sample["rss_mib"] = rss / 1024
        if pss is not None:
            sample["pss_mib"] = pss / 1024
        sample["shutdown_s"] = server.stop(channel)
        return sample


def _info(channel: grpc.Channel) -> None:
    base = base_pb2_grpc.BasePluginStub(channel)
    base.PluginInfo(base_pb2.PluginInfoRequest())
    base.ConfigSchema(base_pb2.ConfigSchemaRequest())


def _validate(channel: grpc.Channel) -> None:
    base = base_pb2_grpc.BasePluginStub(channel)
    for _ in range(2):  # Nomad's loader validates the config twice, with nomad_config unset
        base.SetConfig(base_pb2.SetConfigRequest(msgpack_config=msgpack.packb({}), plugin_api_version="v0.1.0"))


def _run(channel: grpc.Channel) -> None:
    agent = base_pb2.NomadConfig(driver=base_pb2.NomadDriverConfig(ClientMinPort=14000, ClientMaxPort=14512))
    base_pb2_grpc.BasePluginStub(channel).SetConfig(
        base_pb2.SetConfigRequest(msgpack_config=msgpack.packb({}), nomad_config=agent, plugin_api_version="v0.1.0")
    )
    stream = driver_pb2_grpc.DriverStub(channel).Fingerprint(driver_pb2.FingerprintRequest())
    next(iter(stream))
    stream.cancel()


def _nothing(channel: grpc.Channel) -> None:
    pass


def cycles(name: str, steps: list[Callable[[grpc.Channel], None]]) -> list[float]:
    """One launch per step: spawn, handshake, the step's RPCs, Shutdown, exit. Wall time of each."""
    times = []
    for step in steps:
        start = time.perf_counter()
        with launched(name) as server:
            channel = server.channel()
            try:
                step(channel)
            except grpc.RpcError as exc:
                raise LaunchFailed(f"{step.__name__.strip('_')}: {_reason(exc)}") from exc
            server.stop(channel)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="measured runs per target (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 runs, for CI smoke use")
    parser.add_argument(
        "--pycache",
        choices=("prefix", "inherit"),
        default="prefix",
        help="prefix: children write/read bytecode under bench/results/pycache, like an installed wheel (default); "
        "inherit: children get this environment's bytecode settings unchanged",
    )
    parser.add_argument("--output", type=Path, default=RESULT, help=f"JSON result (default {RESULT.relative_to(REPO)})")
    opts = parser.parse_args()
    runs = 3 if opts.quick else opts.runs
    if opts.pycache == "prefix":
        # An installed wheel has bytecode for every module; a dev shell may set PYTHONDONTWRITEBYTECODE, which
        # makes every launch compile the project from source. Keep .pyc files under bench/results instead.
        ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        ENV["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    load_at_start = os.getloadavg()
    samples: dict[str, dict[str, list[float]]] = {name: {m: [] for m in METRICS} for name in COMMANDS}
    boot: dict[str, list[float]] = {
        "plugin_total_s": [],
        "floor_3_cycles_s": [],
        "info_s": [],
        "validate_s": [],
        "run_s": [],
    }
    failures: list[str] = []

    def attempt(work: Callable[[], object]) -> None:
        try:
            work()
        except LaunchFailed as exc:
            failures.append(str(exc))
            print(f"FAILURE: {exc}", file=sys.stderr)

    def record_launch(name: str) -> None:
        for metric, value in measure(name).items():
            samples[name][metric].append(value)

    def record_boot() -> None:
        info, validate, run = cycles("plugin", [_info, _validate, _run])
        boot["info_s"].append(info)
        boot["validate_s"].append(validate)
        boot["run_s"].append(run)
        boot["plugin_total_s"].append(info + validate + run)

    def record_floor_cycles() -> None:
        boot["floor_3_cycles_s"].append(sum(cycles("floor", [_nothing] * 3)))

    for name in COMMANDS:  # warm-up: page cache and .pyc files, not recorded
        attempt(functools.partial(cycles, name, [_nothing]))
    for run in range(runs):
        order = list(COMMANDS) if run % 2 == 0 else list(reversed(COMMANDS))  # alternate who goes first
        for name in order:
            attempt(functools.partial(record_launch, name))
        for work in (record_boot, record_floor_cycles) if run % 2 == 0 else (record_floor_cycles, record_boot):
            attempt(work)
        print(f"run {run + 1}/{runs} done", file=sys.stderr, flush=True)

    stats = {name: {m: summary(v) for m, v in metrics.items()} for name, metrics in samples.items()}
    boot_stats = {key: summary(values) for key, values in boot.items()}

    def ratio(plugin: dict[str, float], floor: dict[str, float]) -> float | None:
        return plugin["median"] / floor["median"] if plugin and floor and floor["median"] else None

    ratios = {m: ratio(stats["plugin"][m], stats["floor"][m]) for m in METRICS}
    ratios["boot_total"] = ratio(boot_stats["plugin_total_s"], boot_stats["floor_3_cycles_s"])
    goal = {m: {"ratio": ratios[m], "limit": GOAL_RATIO, "met": (ratios[m] or 1e9) <= GOAL_RATIO} for m in GOALS}
    result = {
        "machine": machine(grpcio=grpc.__version__),
        "runs": runs,
        "pycache": opts.pycache,
        "loadavg_at_start": load_at_start,
        "pythondontwritebytecode": ENV.get("PYTHONDONTWRITEBYTECODE"),
        "idle_s": IDLE_S,
        "commands": COMMANDS,
        "samples": samples,
        "summary": stats,
        "boot": {"samples": boot, "summary": boot_stats},
        "ratios": ratios,
        "goal": goal,
        "failures": failures,
    }
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    print(f"\nJSON written to {opts.output}")
    return 1 if failures else 0


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if metric.endswith("_s") else f"{value:.1f}"


def print_report(result: dict[str, Any]) -> None:
    stats, ratios = result["summary"], result["ratios"]
    where = result["machine"]
    print(
        f"\n{result['runs']} runs, {where['nproc']} cores, {where['cpu']}, pycache={result['pycache']}, "
        f"load {result['loadavg_at_start'][0]:.1f} -> {where['loadavg_at_end'][0]:.1f}"
    )
    print(f"{'metric':24}{'floor med':>10}{'p90':>8}{'min':>8}{'plugin med':>12}{'p90':>8}{'min':>8}{'ratio':>8}")
    for metric, label in METRICS.items():
        row = [stats[name][metric].get(k) for name in ("floor", "plugin") for k in ("median", "p90", "min")]
        cells = "".join(f"{_fmt(v, metric):>{w}}" for v, w in zip(row, (10, 8, 8, 12, 8, 8), strict=True))
        r = ratios[metric]
        print(f"{label:24}{cells}{(f'{r:.2f}x' if r else '-'):>8}")
    boot, total = result["boot"]["summary"], ratios["boot_total"]
    steps = " + ".join(_fmt(boot[k].get("median"), "_s") for k in ("info_s", "validate_s", "run_s"))
    print(f"\nagent boot pattern, medians (s): plugin info + validate + run = {steps}")
    print(
        f"  plugin total {_fmt(boot['plugin_total_s'].get('median'), '_s')} (p90 "
        f"{_fmt(boot['plugin_total_s'].get('p90'), '_s')}), floor 3 bare cycles "
        f"{_fmt(boot['floor_3_cycles_s'].get('median'), '_s')} (p90 {_fmt(boot['floor_3_cycles_s'].get('p90'), '_s')})"
        f", ratio {f'{total:.2f}x' if total else '-'}"
    )
    for metric, verdict in result["goal"].items():
        state = "met" if verdict["met"] else "NOT met"
        print(f"goal {METRICS[metric]} <= {verdict['limit']}x floor: {state}")
    if result["failures"]:
        print(f"\n{len(result['failures'])} failure(s):", *result["failures"], sep="\n  ")


if __name__ == "__main__":
    sys.exit(main())
