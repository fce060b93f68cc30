"""Network benchmark: the driver's pod networks against the same CNI plugins run by hand, in the same run.

  cycle     pod network setup + teardown: the driver's network code (PodNetworks.setup/teardown, in
            this process: state file, port check, netns, CNI ptp+host-local ADD, portmap ADD with one
            port, resolv.conf and hosts; then DEL and netns delete) against bench/network/bare_cni.py
            (netns + the same plugins through the CNI exec protocol, no driver code). Interleaved run
            by run. IPv4, and dual-stack (default_network_subnet6) when the host has IPv6; then a few
            by-hand dual-stack runs with DAD left on, to show what turning it off saves.
  start     StartTask (net = default, one port) through the plugin process against netns + the same
            CNI plugins by hand + `runc run -d` of the same bundle (bench/pods' floor); DestroyTask
            against `runc delete -f` + umount + CNI DEL + netns delete.
  forward   a TCP server inside a pod's namespace: per-connection latency (connect, 1-byte request,
            1-byte answer, close) and one-connection throughput, through portmap's DNAT on
            127.0.0.1:<host port> against the pod's own address.

Ratios are driver / by hand (goal for cycle: <= 1.2x). Results are reported, never asserted: the exit
status is non-zero only when something fails or something is left behind (netns, per-pod iptables or
ip6tables chains, leases, runc containers, mounts, cgroups).

    .venv/bin/python bench/network/run.py [--runs N] [--start-runs N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from bench import podbench  # noqa: E402
from bench.common import (  # noqa: E402
    BenchFailed,
    first_line,
    interrupt_on_sigterm,
    machine,
    summary,
    write_result,
)
from bench.network.bare_cni import BarePod, CniError, rkt_default  # noqa: E402
from bench.podbench import (  # noqa: E402
    Bench,
    force_clean,
    mounts_under,
    netns_names,
    remove_cgroup_parent,
    running_plugin,
)
from bench.podbench import leftovers as pod_leftovers  # noqa: E402
from nomad_rkt_driver.network.attach import NetworkRequest, PodNetworks  # noqa: E402
from nomad_rkt_driver.network.netns import ipv6_problem  # noqa: E402
from nomad_rkt_driver.network.ports import PortForward  # noqa: E402
from nomad_rkt_driver.protocol.gen import driver_pb2  # noqa: E402
from tests.imagebuild import busybox_image  # noqa: E402

RESULT: Final = REPO / "bench" / "results" / "network.json"
CNI_PATH: Final = "/usr/lib/cni"
GOAL_CYCLE_RATIO: Final = 1.2  # issue 5: pod network setup + teardown within 1.2x the plugins run by hand
WHERE: Final = "bench"
SERVER: Final = """
import socket, threading
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8080)); s.listen(128)
print("ready", flush=True)
def serve(c):
    with c:
        kind = c.recv(1)
        if kind == b"p":
            c.sendall(b"o")
        elif kind == b"s":
            n = 0
            while True:
                chunk = c.recv(1 << 20)
                if not chunk:
                    break
                n += len(chunk)
            c.sendall(str(n).encode())
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def subnets() -> tuple[str, str, str, str]:
    """Two IPv4 /24s and two IPv6 /64s nobody else here uses (driver side, by-hand side)."""
    a, b = random.randint(16, 250), random.randint(1, 125) * 2
    six = f"fd{random.randint(0, 255):02x}:{secrets.token_hex(2)}"
    return f"10.{a}.{b}.0/24", f"10.{a}.{b + 1}.0/24", f"{six}:1::/64", f"{six}:2::/64"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def forward_to(port: int) -> PortForward:
    return PortForward("http", "127.0.0.1", port, 8080, "tcp")


def attempt(work: Callable[[], object], failures: list[str]) -> None:
    podbench.attempt(work, failures, also=(CniError, ValueError))


# -- cycle: network setup + teardown --------------------------------------------------------------


class Cycle:
    """The driver's network code and the by-hand floor, each with its own subnet and IPAM dir."""

    def __init__(self, work: Path, dual: bool, ids: list[str]) -> None:
        ours4, bare4, ours6, bare6 = subnets()
        (work / "net.d").mkdir(parents=True, exist_ok=True)
        self.dual = dual
        self.ids = ids
        self.ours = PodNetworks(work / "ours-net", (CNI_PATH,), str(work / "net.d"), ours4, ours6 if dual else "")
        self.bare_conf = rkt_default("benchbare", bare4, str(work / "bare-ipam"), bare6 if dual else "")
        self.work = work

    def ours_once(self) -> tuple[float, float]:
        pod = "bench" + secrets.token_hex(6)
        self.ids.append(pod)
        began = time.perf_counter()
        self.ours.setup(NetworkRequest(pod, forwards=(forward_to(free_port()),)), WHERE)
        made = time.perf_counter()
        self.ours.teardown(pod)
        return made - began, time.perf_counter() - made

    def bare_pod(self) -> BarePod:
        cid = "bare" + secrets.token_hex(6)
        self.ids.append(cid)
        mapping = {"hostPort": free_port(), "containerPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"}
        return BarePod(f"rkt-{cid}", cid, self.bare_conf, {"portMappings": [mapping]})

    def bare_once(self, no_dad: bool = True) -> tuple[float, float]:
        pod = self.bare_pod()
        began = time.perf_counter()
        try:
            pod.up(no_dad=no_dad and self.dual)
        except CniError:
            with contextlib.suppress(CniError):
                pod.down()
            raise
        made = time.perf_counter()
        pod.down()
        return made - began, time.perf_counter() - made


def cycle(work: Path, runs: int, dual: bool, ids: list[str], failures: list[str]) -> dict[str, list[float]]:
    bench = Cycle(work / ("dual" if dual else "v4"), dual, ids)
    samples: dict[str, list[float]] = {k: [] for k in ("ours_setup", "ours_teardown", "bare_setup", "bare_teardown")}

    def record(kind: str, pair: tuple[float, float]) -> None:
        samples[f"{kind}_setup"].append(pair[0])
        samples[f"{kind}_teardown"].append(pair[1])

    for _ in range(2):  # warm-up: page cache, iptables modules, IPAM dirs
        bench.ours_once()
        bench.bare_once()
    for i in range(runs):
        order = [lambda: record("ours", bench.ours_once()), lambda: record("bare", bench.bare_once())]
        for work_item in order if i % 2 == 0 else reversed(order):
            attempt(work_item, failures)
    if dual:
        samples["bare_dad_setup"] = []
        samples["bare_dad_teardown"] = []
        for _ in range(min(3, runs)):
            attempt(lambda: record("bare_dad", bench.bare_once(no_dad=False)), failures)
    return samples


# -- start: StartTask with a network --------------------------------------------------------------


def networked_task(bench: Bench) -> driver_pb2.TaskConfig:
    config = bench.task(command="/bin/sleep", args=["3600"], net=["default"], ports=["http"])
    config.resources.ports.append(driver_pb2.PortMapping(label="http", value=free_port(), to=8080, host_ip="127.0.0.1"))
    return config


def start(work: Path, runs: int, ids: list[str], failures: list[str]) -> dict[str, list[float]]:
    ours4, bare4, _, _ = subnets()
    image = f"oci:{busybox_image(work / 'layout', tag='v1').layout}:v1"
    (work / "net.d").mkdir()
    bare_conf = rkt_default("benchbare", bare4, str(work / "bare-ipam"))
    samples: dict[str, list[float]] = {k: [] for k in ("ours_start", "ours_destroy", "bare_start", "bare_destroy")}
    with running_plugin(work / "data", default_network_subnet=ours4, cni_config_dir=str(work / "net.d")) as plugin:
        bench = Bench(plugin, work, work / "data", image)
        warm = networked_task(bench)
        bench.start_task(warm)  # imports and unpacks the image
        try:
            bench.learn_bundle(warm.id)
        finally:
            bench.destroy_task(warm.id)
        namespaces = bench.bare_config["linux"]["namespaces"]
        network_ns = next(ns for ns in namespaces if ns["type"] == "network")

        def ours() -> None:
            config = networked_task(bench)
            try:
                samples["ours_start"].append(bench.start_task(config))
            finally:
                samples["ours_destroy"].append(bench.destroy_task(config.id))

        def bare(name: str) -> None:
            cid = "bare" + secrets.token_hex(6)
            ids.append(cid)
            mapping = {"hostPort": free_port(), "containerPort": 8080, "protocol": "tcp", "hostIP": "127.0.0.1"}
            pod = BarePod(f"rkt-{cid}", cid, bare_conf, {"portMappings": [mapping]})
            began = time.perf_counter()
            pod.up()
            network_ns["path"] = pod.netns_path
            try:
                _, bundle = bench.bare_start(name)
            except BaseException:
                pod.down()
                raise
            samples["bare_start"].append(time.perf_counter() - began)
            began = time.perf_counter()
            bench.bare_delete(name, bundle)
            pod.down()
            samples["bare_destroy"].append(time.perf_counter() - began)

        bare("warmup")
        samples["bare_start"].clear()
        samples["bare_destroy"].clear()
        for i in range(runs):
            order: list[Callable[[], None]] = [ours, functools.partial(bare, str(i))]
            for work_item in order if i % 2 == 0 else reversed(order):
                attempt(work_item, failures)
            print(f"start run {i + 1}/{runs} done", file=sys.stderr, flush=True)
    return samples


# -- forward: through portmap against the pod's address -------------------------------------------


def one_request(address: str, port: int) -> float:
    began = time.perf_counter()
    with socket.create_connection((address, port), timeout=10) as conn:
        conn.sendall(b"p")
        if conn.recv(1) != b"o":
            raise BenchFailed(f"no answer from {address}:{port}")
    return time.perf_counter() - began


def stream(address: str, port: int, mib: int) -> float:
    """MiB/s of ``mib`` MiB sent over one connection (until the server has counted them all)."""
    chunk = b"\0" * (1 << 20)
    began = time.perf_counter()
    with socket.create_connection((address, port), timeout=30) as conn:
        conn.sendall(b"s")
        for _ in range(mib):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        counted = int(conn.recv(64) or b"0")
    if counted != mib << 20:
        raise BenchFailed(f"server counted {counted} bytes of {mib << 20}")
    return mib / (time.perf_counter() - began)


def forward(work: Path, requests: int, mib: int, ids: list[str], failures: list[str]) -> dict[str, Any]:
    bench = Cycle(work / "forward", False, ids)
    pod = "bench" + secrets.token_hex(6)
    ids.append(pod)
    host_port = free_port()
    attachment = bench.ours.setup(NetworkRequest(pod, forwards=(forward_to(host_port),)), WHERE)
    out: dict[str, Any] = {"requests": requests, "mib": mib}
    try:
        with subprocess.Popen(
            ["ip", "netns", "exec", f"rkt-{pod}", sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
        ) as server:
            try:
                assert server.stdout is not None
                if server.stdout.readline() != "ready\n":
                    raise BenchFailed("the server in the pod's namespace did not start")
                targets = {"forward": ("127.0.0.1", host_port), "direct": (attachment.ip, 8080)}
                for name, (address, port) in targets.items():
                    one_request(address, port)  # warm: ARP/neighbour, conntrack
                    out[f"{name}_latency_s"] = []
                    out[f"{name}_mib_s"] = []
                for i in range(requests):
                    for name in targets if i % 2 == 0 else reversed(list(targets)):
                        out[f"{name}_latency_s"].append(one_request(*targets[name]))
                for i in range(3):
                    for name in targets if i % 2 == 0 else reversed(list(targets)):
                        out[f"{name}_mib_s"].append(stream(*targets[name], mib))
            finally:
                server.kill()
    except (BenchFailed, OSError, ValueError) as exc:
        failures.append(f"forward phase: {exc}")
        print(f"FAILURE: {exc}", file=sys.stderr)
    finally:
        bench.ours.teardown(pod)
    return out


# -- leftovers, report, main ----------------------------------------------------------------------


def network_leftovers(work: Path, ids: list[str], netns_before: set[str]) -> list[str]:
    found = [f"netns {n}" for n in sorted(netns_names() - netns_before)]
    for tool in ("iptables", "ip6tables"):
        rules = subprocess.run([tool, "-t", "nat", "-S"], capture_output=True, text=True, check=False).stdout
        found += [f"{tool}: {line}" for line in rules.splitlines() if any(f'"{i}"' in line for i in ids)]
    for ipam in work.rglob("*ipam*"):
        if ipam.is_dir():
            found += [
                f"lease {p}"
                for p in ipam.rglob("*")
                if p.is_file() and p.name != "lock" and not p.name.startswith("last_reserved")
            ]
    found += [f"pod network state {p}" for p in work.glob("*/*-net/pods/*")]
    found += [f"pod network state {p}" for p in work.glob("start/data/network/pods/*")]
    return found


def ratio_line(label: str, ours: dict[str, float], bare: dict[str, float], goal: float | None = None) -> dict[str, Any]:
    ratio = ours["median"] / bare["median"]
    p90 = ours["p90"] / bare["p90"]
    text = f"{label}: {ratio:.2f}x median, {p90:.2f}x p90"
    out: dict[str, Any] = {"median": ratio, "p90": p90}
    if goal is not None:
        out |= {"goal": goal, "met": ratio <= goal}
        text += f" (goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'})"
    print(text)
    return out


def report(result: dict[str, Any]) -> None:
    where = result["machine"]
    print(
        f"\n{result['runs']} runs, {where['nproc']} cores, {where['cpu']}, "
        f"load {result['loadavg_at_start'][0]:.1f} -> {where['loadavg_at_end'][0]:.1f}"
    )
    result["ratios"] = {}
    print(f"{'(milliseconds)':34}{'median':>8}{'p90':>8}{'min':>8}{'max':>8}")

    def row(label: str, values: list[float]) -> dict[str, float]:
        s = summary([v * 1000 for v in values])
        if s:
            print(f"{label:34}" + "".join(f"{s[k]:8.1f}" for k in ("median", "p90", "min", "max")))
        return s

    for kind in ("v4", "dual"):
        samples = result.get(f"cycle_{kind}")
        if not samples:
            continue
        stats = {k: row(f"{kind} {k.replace('_', ' ')}", v) for k, v in samples.items()}
        totals = {
            side: row(
                f"{kind} {side} setup+teardown",
                [a + b for a, b in zip(samples[f"{side}_setup"], samples[f"{side}_teardown"], strict=True)],
            )
            for side in ("ours", "bare")
        }
        if all(stats[k] for k in ("ours_setup", "bare_setup")) and totals["ours"] and totals["bare"]:
            result["ratios"][f"cycle_{kind}"] = {
                "setup": ratio_line(f"{kind} network setup / by hand", stats["ours_setup"], stats["bare_setup"]),
                "teardown": ratio_line(
                    f"{kind} network teardown / by hand", stats["ours_teardown"], stats["bare_teardown"]
                ),
                "total": ratio_line(
                    f"{kind} network setup+teardown / by hand", totals["ours"], totals["bare"], GOAL_CYCLE_RATIO
                ),
            }
    samples = result.get("start")
    if samples:
        stats = {k: row(k.replace("_", " "), v) for k, v in samples.items()}
        if stats["ours_start"] and stats["bare_start"]:
            result["ratios"]["start"] = {
                "start": ratio_line("StartTask / netns+CNI+runc run -d", stats["ours_start"], stats["bare_start"]),
                "destroy": ratio_line(
                    "DestroyTask / runc delete+CNI DEL", stats["ours_destroy"], stats["bare_destroy"]
                ),
            }
    fwd = result.get("forward")
    if fwd and fwd.get("forward_latency_s"):
        lat = {k: row(f"{k} connect+request", fwd[f"{k}_latency_s"]) for k in ("forward", "direct")}
        result["ratios"]["forward_latency"] = ratio_line("latency via portmap / direct", lat["forward"], lat["direct"])
        rates = {k: summary(fwd[f"{k}_mib_s"]) for k in ("forward", "direct")}
        for k in ("forward", "direct"):
            print(
                f"{k} throughput: {rates[k]['median']:.0f} MiB/s median ({rates[k]['min']:.0f}-{rates[k]['max']:.0f})"
            )
        result["ratios"]["forward_throughput"] = rates["forward"]["median"] / rates["direct"]["median"]
        print(f"throughput via portmap / direct: {result['ratios']['forward_throughput']:.2f}x")
    if result["failures"]:
        print(f"\n{len(result['failures'])} failure(s):", *result["failures"], sep="\n  ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="network setup+teardown pairs per family (default 30)")
    parser.add_argument("--start-runs", type=int, default=15, help="StartTask / by-hand pairs (default 15)")
    parser.add_argument("--requests", type=int, default=300, help="connections per target in the forward phase")
    parser.add_argument("--mib", type=int, default=256, help="MiB per throughput sample")
    parser.add_argument("--quick", action="store_true", help="3 runs of each, 30 requests, 16 MiB: a CI smoke test")
    parser.add_argument("--output", type=Path, default=RESULT, help=f"JSON result (default {RESULT.relative_to(REPO)})")
    opts = parser.parse_args()
    runs, start_runs, requests, mib = (
        (3, 2, 30, 16) if opts.quick else (opts.runs, opts.start_runs, opts.requests, opts.mib)
    )
    if os.geteuid() != 0:
        print("the network benchmark needs root (netns, CNI plugins, iptables, runc)", file=sys.stderr)
        return 1
    interrupt_on_sigterm()
    no_ipv6 = ipv6_problem()
    result: dict[str, Any] = {"runs": runs, "start_runs": start_runs, "loadavg_at_start": os.getloadavg()}
    if no_ipv6:
        result["dual_skipped"] = no_ipv6
        print(f"dual-stack cycle not measured: {no_ipv6}", file=sys.stderr)
    failures: list[str] = []
    ids: list[str] = []
    netns_before = netns_names()
    work = Path(tempfile.mkdtemp(prefix="rkt-bench-network-"))
    try:
        result["cycle_v4"] = cycle(work, runs, False, ids, failures)
        print("v4 cycle done", file=sys.stderr, flush=True)
        if not no_ipv6:
            result["cycle_dual"] = cycle(work, runs, True, ids, failures)
            print("dual-stack cycle done", file=sys.stderr, flush=True)
        result["forward"] = forward(work, requests, mib, ids, failures)
        print("forward done", file=sys.stderr, flush=True)
        (work / "start").mkdir()
        result["start"] = start(work / "start", start_runs, ids, failures)
    except (BenchFailed, CniError, grpc.RpcError, OSError, AssertionError, ValueError) as exc:
        failures.append(f"set-up: {exc}")
        print(f"FAILURE: {exc}", file=sys.stderr)
    finally:
        remove_cgroup_parent()
        left = sorted(set(network_leftovers(work, ids, netns_before) + pod_leftovers(work / "start", netns_before)))
        if left:
            failures.append(f"left behind: {left}")
            print(f"FAILURE: left behind {left}", file=sys.stderr)
            force_clean(work / "start")
        if not mounts_under(work):
            shutil.rmtree(work, ignore_errors=True)
    result["machine"] = machine(
        runc=first_line("runc", "--version"),
        cni_plugins=first_line("dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins"),
        iptables=first_line("iptables", "--version"),
    )
    result["failures"] = failures
    report(result)
    write_result(result, opts.output)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
