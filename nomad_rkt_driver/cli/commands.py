"""Operator commands. Each one that asks the driver something launches the plugin executable
through the go-plugin handshake, exactly as a Nomad agent would."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from nomad_rkt_driver.cli.hclfile import encode_like_nomad, plugin_block
from nomad_rkt_driver.cli.plugin_client import PluginProcess
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.driver.driver import plugin_version
from nomad_rkt_driver.protocol.gen import base_pb2, driver_pb2

if TYPE_CHECKING:
    from nomad_rkt_driver.cli.variables import VarInputs

HEALTH = {0: "undetected", 1: "unhealthy", 2: "healthy"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nomad-rkt-driver",
        description="A daemonless, rkt-style Nomad task driver. Without arguments (and with Nomad's "
        "handshake environment) it serves the plugin protocol.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the plugin version")
    fp = sub.add_parser("fingerprint", help="start the plugin as Nomad would and show what Nomad would see")
    fp.add_argument(
        "--plugin-config",
        type=Path,
        default=None,
        help='an HCL file with a plugin "rkt" { config { ... } } block (default: none)',
    )
    fp.add_argument("--json", action="store_true", help="machine-readable output")
    run = sub.add_parser("run", help="run a job file's rkt tasks on this host through the plugin (one-node Nomad)")
    run.add_argument("jobfile", type=Path)
    run.add_argument(
        "--plugin-config",
        type=Path,
        default=None,
        help='HCL file with the plugin "rkt" block (default: ./plugin.hcl when it exists)',
    )
    _variable_flags(run)
    for name, text in (("list", "pods on this host"), ("status", "one pod on this host")):
        cmd = sub.add_parser(name, help=text)
        if name == "status":
            cmd.add_argument("pod")
        cmd.add_argument("--plugin-config", type=Path, default=None)
        cmd.add_argument("--json", action="store_true")
    image = sub.add_parser("image", help="images in the driver's store").add_subparsers(
        dest="image_command", required=True
    )
    image_list = image.add_parser("list", help="stored images")
    image_list.add_argument("--json", action="store_true")
    image_rm = image.add_parser("rm", help="remove a stored image no pod uses")
    image_rm.add_argument("name")
    image_gc = image.add_parser("gc", help="remove every stored image no pod uses now, and say what it freed")
    image_gc.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    image_gc.add_argument(
        "--to-budget",
        action="store_true",
        help="remove only least recently used images until the store fits gc.image_store_max",
    )
    image_gc.add_argument("--json", action="store_true", help="machine-readable output")
    for cmd in (image_list, image_rm, image_gc):
        cmd.add_argument("--plugin-config", type=Path, default=None)
    fetch = sub.add_parser("fetch", help="fetch, verify and unpack an image into the store as StartTask would")
    fetch.add_argument("image")
    fetch.add_argument("--insecure-options", default="", help='rkt\'s values, comma separated, e.g. "http,image"')
    fetch.add_argument("--plugin-config", type=Path, default=None)
    trust = sub.add_parser("trust", help="trusted image-signing keys").add_subparsers(
        dest="trust_command", required=True
    )
    trust_add = trust.add_parser("add", help="trust an armored OpenPGP key for an image name prefix (rkt trust)")
    trust_add.add_argument("keyfile", type=Path)
    scope = trust_add.add_mutually_exclusive_group(required=True)
    scope.add_argument("--prefix", help='image name prefix, e.g. "example.com/app"')
    scope.add_argument("--root", action="store_true", help="trust the key for every image")
    trust_add.add_argument("--plugin-config", type=Path, default=None)
    gc = sub.add_parser(
        "gc",
        help="remove dangling pods (exited, lost, or of a runner that is gone), pod networks without a pod, "
        "group networks of a runner that is gone, and .deleting-* leftovers of a crashed removal",
    )
    gc.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    gc.add_argument(
        "--force",
        action="store_true",
        help="also remove running pods of a Nomad agent whose plugin is not running (it will not recover them)",
    )
    gc.add_argument("--plugin-config", type=Path, default=None)
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    validate = sub.add_parser("validate", help="check the rkt task configs of job files against the driver's schema")
    validate.add_argument("jobfiles", type=Path, nargs="+")
    _variable_flags(validate)
    return parser


def _variable_flags(cmd: argparse.ArgumentParser) -> None:
    """HCL2 input variables as `nomad job run` takes them (-var and --var both work)."""
    cmd.add_argument(
        "-var",
        "--var",
        dest="vars",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a job variable; repeatable, the last wins; lists and maps in HCL syntax",
    )
    cmd.add_argument(
        "-var-file",
        "--var-file",
        dest="var_files",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="HCL (or .json) file of NAME = VALUE; repeatable, later files win, -var wins over files",
    )


def _var_inputs(opts: argparse.Namespace) -> VarInputs:
    from nomad_rkt_driver.cli.variables import VarInputs

    return VarInputs(tuple(opts.vars), tuple(opts.var_files))


def dispatch(args: list[str]) -> int:
    opts = _parser().parse_args(args)
    if opts.command == "version":
        print(plugin_version())
        return 0
    if opts.command == "fingerprint":
        return _fingerprint(opts.plugin_config, opts.json)
    if opts.command == "run":
        return _run(opts.jobfile, opts.plugin_config, _var_inputs(opts))
    if opts.command == "validate":
        return _validate(opts.jobfiles, _var_inputs(opts))
    return _operate(opts)


def _operate(opts: argparse.Namespace) -> int:
    from nomad_rkt_driver.cli import operator
    from nomad_rkt_driver.errors import DriverError

    try:
        config = operator.load_plugin_config(opts.plugin_config)
    except (OSError, ValueError, DriverError) as exc:
        print(f"nomad-rkt-driver: {exc}", file=sys.stderr)
        return 1
    if opts.command == "list":
        return operator.pods_list(config, opts.json)
    if opts.command == "status":
        return operator.pod_status(config, opts.pod, opts.json)
    if opts.command == "image" and opts.image_command == "list":
        return operator.images_list(config, opts.json)
    if opts.command == "image" and opts.image_command == "rm":
        return operator.image_rm(config, opts.name)
    if opts.command == "image" and opts.image_command == "gc":
        return operator.image_gc(config, dry_run=opts.dry_run, to_budget=opts.to_budget, as_json=opts.json)
    if opts.command == "gc":
        return operator.gc(config, dry_run=opts.dry_run, force=opts.force, as_json=opts.json)
    if opts.command == "fetch":
        options = [o.strip() for o in opts.insecure_options.split(",") if o.strip()]
        return operator.fetch(config, opts.image, options)
    if opts.command == "trust":
        return operator.trust_add(config, opts.keyfile, None if opts.root else opts.prefix)
    return 2


def _run(jobfile: Path, plugin_config: Path | None, inputs: VarInputs) -> int:
    from nomad_rkt_driver.cli.env import InterpolationError
    from nomad_rkt_driver.cli.jobfile import JobFileError, load_job
    from nomad_rkt_driver.cli.ports import PortError
    from nomad_rkt_driver.cli.run import run_job
    from nomad_rkt_driver.errors import DriverError

    if plugin_config is None and Path("plugin.hcl").is_file():
        plugin_config = Path("plugin.hcl")
    try:
        return run_job(load_job(jobfile, inputs), jobfile, plugin_config)
    except (OSError, JobFileError, PortError, InterpolationError, DriverError) as exc:
        print(f"nomad-rkt-driver: {exc}", file=sys.stderr)
        return 1


def _validate(jobfiles: list[Path], inputs: VarInputs) -> int:
    from nomad_rkt_driver.cli.jobfile import JobFileError, rkt_tasks
    from nomad_rkt_driver.config.decode import decode_msgpack
    from nomad_rkt_driver.config.task import TaskConfig
    from nomad_rkt_driver.errors import InvalidConfig

    failed = 0
    for path in jobfiles:
        try:
            tasks = rkt_tasks(path, inputs)
            for task in tasks:
                decode_msgpack(TaskConfig, encode_like_nomad(TaskConfig, task.config), f'{path}: task "{task.task}"')
        except (OSError, JobFileError, InvalidConfig) as exc:
            print(f"{exc}", file=sys.stderr)
            failed += 1
            continue
        except Exception as exc:  # the HCL parser's own errors carry the line
            print(f"{path}: cannot parse: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok ({len(tasks)} rkt task{'s' if len(tasks) != 1 else ''})")
    return 1 if failed else 0


def _as_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def _fingerprint(config_path: Path | None, as_json: bool) -> int:
    try:
        body = plugin_block(config_path) if config_path else {}
    except (OSError, ValueError) as exc:
        print(f"nomad-rkt-driver: {exc}", file=sys.stderr)
        return 1
    with PluginProcess() as plugin:
        info = plugin.base.PluginInfo(base_pb2.PluginInfoRequest())
        schema = plugin.base.ConfigSchema(base_pb2.ConfigSchemaRequest())
        try:
            plugin.base.SetConfig(
                base_pb2.SetConfigRequest(
                    msgpack_config=encode_like_nomad(PluginConfig, body), plugin_api_version="v0.1.0"
                )
            )
        except grpc.RpcError as exc:
            print(f"nomad-rkt-driver: the plugin refused its config: {exc.details()}", file=sys.stderr)
            return 1
        task_schema = plugin.driver.TaskConfigSchema(driver_pb2.TaskConfigSchemaRequest())
        caps = plugin.driver.Capabilities(driver_pb2.CapabilitiesRequest())
        stream = plugin.driver.Fingerprint(driver_pb2.FingerprintRequest())
        first = next(iter(stream))
        stream.cancel()
    report = {
        "plugin": _as_dict(info),
        "health": HEALTH.get(first.health, str(first.health)),
        "health_description": first.health_description,
        "attributes": {k: _as_dict(v) for k, v in sorted(first.attributes.items())},
        "capabilities": _as_dict(caps.capabilities),
        "plugin_config_schema": _as_dict(schema.spec),
        "task_config_schema": _as_dict(task_schema.spec),
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"plugin   {info.name} {info.plugin_version} (API {', '.join(info.plugin_api_versions)})")
    print(f"health   {report['health']}: {first.health_description}")
    for key, value in sorted(first.attributes.items()):
        shown = value.WhichOneof("value")
        print(f"  {key} = {getattr(value, shown) if shown else ''}{value.unit}")
    print("capabilities", json.dumps(report["capabilities"]))
    print("plugin config attributes:", ", ".join(sorted(schema.spec.object.attributes)))
    print("task config attributes:  ", ", ".join(sorted(task_schema.spec.object.attributes)))
    return 0 if first.health == 2 else 3
