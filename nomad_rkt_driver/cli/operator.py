"""Operator commands for what runs on this host, whoever started it (a Nomad agent or `run`):
pods (`list`, `status`, `gc`), images (`image list`, `image rm`, `image gc`, `fetch`) and trust (`trust add`).
They read the driver's data dir directly; the tables are for people, --json for scripts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nomad_rkt_driver.cli.hclfile import encode_like_nomad, plugin_block
from nomad_rkt_driver.config.decode import decode_msgpack
from nomad_rkt_driver.config.plugin import WHERE, PluginConfig
from nomad_rkt_driver.config.sizes import format_size
from nomad_rkt_driver.errors import DriverError, NotFound


def load_plugin_config(path: Path | None) -> PluginConfig:
    if path is None and Path("plugin.hcl").is_file():
        path = Path("plugin.hcl")
    body = plugin_block(path) if path else {}
    return decode_msgpack(PluginConfig, encode_like_nomad(PluginConfig, body), WHERE)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _pods(config: PluginConfig) -> Any:
    from nomad_rkt_driver.runtime.pods import Pods
    from nomad_rkt_driver.runtime.probe import locate

    return Pods(
        Path(config.data_dir) / "pods",
        locate(config.runtime) or config.runtime,
        locate(config.conmon) or config.conmon,
        config.cgroup_parent,
    )


def pods_list(config: PluginConfig, as_json: bool) -> int:
    pods = _pods(config)
    rows: list[dict[str, Any]] = []
    for pod_id in pods.list():
        try:
            status = pods.status(pod_id)
        except DriverError as exc:
            rows.append({"pod": pod_id, "state": "unknown", "detail": str(exc)})
            continue
        result = status.result
        rows.append(
            {
                "pod": pod_id,
                "state": status.state,
                "started": status.started_at,
                "exit_code": result.exit_code if result else None,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        _table(
            [
                [
                    r["pod"],
                    r["state"],
                    _when(r.get("started")),
                    "" if r.get("exit_code") is None else str(r["exit_code"]),
                ]
                for r in rows
            ],
            ["POD", "STATE", "STARTED", "EXIT"],
        )
    )
    return 0


def pod_status(config: PluginConfig, pod_id: str, as_json: bool) -> int:
    pods = _pods(config)
    try:
        record, status = pods.load(pod_id), pods.status(pod_id)
    except NotFound as exc:
        print(f"nomad-rkt-driver: {exc}", file=sys.stderr)
        return 1
    report = {
        "record": asdict(record),
        "state": status.state,
        "result": asdict(status.result) if status.result else None,
        "finished_at": status.finished_at,
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"pod      {pod_id}\nstate    {status.state}\nstarted  {_when(record.started_at)}")
    if status.result:
        r = status.result
        print(f"exit     code {r.exit_code}, signal {r.signal}{', OOM killed' if r.oom_killed else ''}")
    print(f"bundle   {record.bundle}\ncgroup   {record.cgroups_path}\nmonitor  pid {record.conmon_pid}")
    return 0


def gc(config: PluginConfig, *, dry_run: bool, force: bool, as_json: bool = False) -> int:
    """The operator's reconcile pass (no plugin needed): dangling pods, orphan pod networks, group
    networks of runners that are gone, removal leftovers; 1 when a removal failed."""
    from nomad_rkt_driver.driver.reconcile import judge_for_operator, plan, remove
    from nomad_rkt_driver.network.attach import PodNetworks
    from nomad_rkt_driver.network.group import GroupNetworks

    pods = _pods(config)
    networks = PodNetworks(
        Path(config.data_dir) / "network", config.cni_path, config.cni_config_dir, config.default_network_subnet
    )
    groups = GroupNetworks(Path(config.data_dir) / "network" / "groups", config.cni_path)  # as `run` makes them
    grace = float(config.gc.dangling_pods.creation_grace)
    report: list[dict[str, str]] = []
    decisions = plan(pods, networks, lambda found: judge_for_operator(found, grace, force), grace, groups=groups)
    for decision in decisions:
        what = f"{decision.what} {decision.pod_id}: {decision.reason}"
        # "pod" names the item of every kind (a pod id, a group network's namespace, a leftover's path)
        row = {"kind": decision.what, "pod": decision.pod_id, "reason": decision.reason}
        report.append(row)
        if not decision.remove or dry_run:
            row["action"] = "would remove" if decision.remove else "kept"
        else:
            if decision.reason.endswith("(--force)"):
                print(
                    f"nomad-rkt-driver: warning: removing a running pod of the Nomad agent: {decision.pod_id}",
                    file=sys.stderr,
                )
            try:
                remove(pods, networks, decision, groups)
                row["action"] = "removed"
            except (OSError, DriverError) as exc:
                print(f"nomad-rkt-driver: could not remove {what}: {exc}", file=sys.stderr)
                row["action"], row["error"] = "failed", str(exc)
                continue
        if not as_json:
            print(f"{row['action']:<13} {what}")
    if as_json:
        print(json.dumps(report, indent=2))
    return 1 if any(row["action"] == "failed" for row in report) else 0


def _when(epoch: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(epoch))) if epoch else ""


def _store(config: PluginConfig) -> Any:
    from nomad_rkt_driver.images.store import Store

    return Store(Path(config.data_dir) / "images")


def images_list(config: PluginConfig, as_json: bool) -> int:
    from nomad_rkt_driver.images import gc as imagegc

    store = _store(config)
    records = store.list_images()
    measured = imagegc.usage(store)
    used = {i.name: i.last_used for i in measured.images}
    rows = [
        {
            "name": r.name,
            "manifest": r.manifest_digest,
            "layers": len(r.layers),
            "size": sum(layer.size for layer in r.layers),
            "pulled_at": r.pulled_at,
            "disk_bytes": measured.size(r.name),
            "unique_bytes": measured.unique(r.name),
            "last_used": used.get(r.name),
            "in_use": measured.busy.get(r.name),
        }
        for r in records
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        _table(
            [
                [
                    r["name"],
                    r["manifest"][:19],
                    str(r["layers"]),
                    format_size(r["disk_bytes"]),
                    format_size(r["unique_bytes"]),
                    _when(r["pulled_at"]),
                    _when(r["last_used"]),
                    "yes" if r["in_use"] else "",
                ]
                for r in rows
            ],
            ["IMAGE", "MANIFEST", "LAYERS", "SIZE", "UNIQUE", "PULLED", "LAST USED", "IN USE"],
        )
    )
    budget = config.gc.image_store_max_bytes
    print(
        f"{len(rows)} image{'s' if len(rows) != 1 else ''}, {format_size(measured.total)} on disk"
        + (f" (budget {format_size(budget)})" if budget is not None else ""),
        file=sys.stderr,
    )
    return 0


def image_rm(config: PluginConfig, name: str) -> int:
    store = _store(config)
    if store.lookup_image(name) is None:
        print(f"nomad-rkt-driver: no image {name!r} in the store (see `nomad-rkt-driver image list`)", file=sys.stderr)
        return 1
    reason = store.remove_unused_image(name)
    if reason is not None:
        print(f"nomad-rkt-driver: image {name} stays: {reason}; stop the pods using it first", file=sys.stderr)
        return 1
    print(f"removed {name}")
    return 0


def image_gc(config: PluginConfig, *, dry_run: bool, to_budget: bool, as_json: bool = False) -> int:
    """Remove every image no pod uses (with ``to_budget``: only down to gc.image_store_max, LRU first)."""
    from nomad_rkt_driver.images import gc as imagegc

    budget = config.gc.image_store_max_bytes
    if to_budget and budget is None:
        print('nomad-rkt-driver: --to-budget needs a gc { image_store_max = "..." } budget', file=sys.stderr)
        return 1
    result = imagegc.collect(_store(config), budget=budget if to_budget else None, dry_run=dry_run)
    assert result is not None  # without a wait limit, collect waits for a pass of the plugin to end
    if as_json:
        summary = {
            "dry_run": dry_run,
            "removed": [{"name": name, "freed_bytes": freed} for name, freed in result.removed],
            "kept": [{"name": name, "reason": reason} for name, reason in sorted(result.kept.items())],
            "unnamed_freed_bytes": result.leftovers,
            "freed_bytes": result.freed,
            "store_bytes": result.total_after,
            "budget_bytes": budget,
        }
        print(json.dumps(summary, indent=2))
        return 0
    for name, freed in result.removed:
        print(f"{'would remove' if dry_run else 'removed':<13} {name} ({format_size(freed)})")
    for name, reason in sorted(result.kept.items()):
        print(f"{'kept':<13} {name}: {reason}")
    if result.leftovers:
        print(f"{'removed':<13} blobs and layers no image named ({format_size(result.leftovers)})")
    count = f"{len(result.removed)} image{'s' if len(result.removed) != 1 else ''}"
    print(
        f"{'would free' if dry_run else 'freed'} {format_size(result.freed)} ({result.freed} bytes) in {count}; "
        f"the store {'would use' if dry_run else 'uses'} {format_size(result.total_after)}"
        + (f" of its {format_size(budget)} budget" if budget is not None else "")
    )
    return 0


def _add_public_key(trust_dir: Path, pem: bytes, prefix: str | None, name: str) -> Path:
    """A sigstore (cosign) public key: stored as <name>.pub beside the OpenPGP keys, same layout."""
    import hashlib

    from nomad_rkt_driver.images.keystore import check_prefix
    from nomad_rkt_driver.images.sigstore import load_public_key

    load_public_key(pem, source=name)  # refuses junk, private and weak keys with a clear message
    directory = trust_dir / ("root.d" if prefix is None else Path("prefix.d") / check_prefix(prefix))
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{Path(name).stem or hashlib.sha256(pem).hexdigest()[:16]}.pub"
    temp = target.with_suffix(".tmp")
    temp.write_bytes(pem)
    temp.replace(target)
    return target


def trust_add(config: PluginConfig, keyfile: Path, prefix: str | None) -> int:
    from nomad_rkt_driver.images.keystore import Keystore

    try:
        data = keyfile.read_bytes()
        if b"-----BEGIN PUBLIC KEY-----" in data:
            path = _add_public_key(Path(config.trust_dir), data, prefix, keyfile.name)
        else:
            path = Keystore([Path(config.trust_dir)]).add(data, prefix)
    except (OSError, DriverError) as exc:
        print(f"nomad-rkt-driver: {exc}", file=sys.stderr)
        return 1
    print(f'Added key for prefix "{prefix}" at "{path}"' if prefix else f'Added root key at "{path}"')
    return 0


def fetch(config: PluginConfig, image: str, insecure_options: list[str]) -> int:
    """Fetch, verify and unpack an image into the store exactly as StartTask would."""
    from nomad_rkt_driver.config.decode import decode
    from nomad_rkt_driver.config.task import TaskConfig
    from nomad_rkt_driver.driver.imaging import Images
    from nomad_rkt_driver.images.pull import Puller, PullProgress

    def progress(p: PullProgress) -> None:
        print(
            f"  {p.layers_done}/{p.layers_total} layers, {p.bytes_done / 1e6:.1f}/{p.bytes_total / 1e6:.1f} MB",
            file=sys.stderr,
        )

    try:
        task = decode(TaskConfig, {"image": image, "insecure_options": insecure_options}, "fetch")
        store = _store(config)
        ready = Images(store, Puller(store, activity_timeout_s=float(config.pull_activity_timeout))).prepare(
            task, config, "fetch", progress
        )
    except DriverError as exc:
        print(f"nomad-rkt-driver: {exc}", file=sys.stderr)
        return 1
    ready.release()  # fetched for later: no start is using it now
    record = ready.record
    print(f"{record.name}\n  manifest {record.manifest_digest}\n  layers   {len(record.layers)}")
    if record.kind == "aci" and record.layers and record.layers[0].diff_id:
        print(f"  image id sha512-{record.layers[0].diff_id.removeprefix('sha512:')[:64]}")
    if ready.signer:
        print(f"  signed   by {ready.signer}")
    return 0
