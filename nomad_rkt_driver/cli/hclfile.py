"""Reading the agent's ``plugin "rkt" { config { ... } }`` block from an HCL file, and encoding a
config block the way Nomad does before SetConfig (every declared key present, None when unset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from nomad_rkt_driver.config.fields import settings


def load_hcl(path: Path) -> dict[str, Any]:
    import hcl2
    from hcl2 import SerializationOptions

    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = hcl2.load(handle, serialization_options=options)
    return data


def single(value: Any) -> Any:
    # python-hcl2 gives every block as a list of bodies; a config block appears once.
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        return value[0]
    return value


def plugin_block(path: Path, name: str = "rkt") -> dict[str, Any]:
    """The ``config {}`` body of ``plugin "<name>"`` in ``path`` ({} when absent).

    Relative paths where the plugin wants absolute ones (``cni_config_dir = "cni"``) are taken
    from the file's directory, as the runner takes a relative ``oci:`` image from the job file's.
    """
    from nomad_rkt_driver.config.plugin import PluginConfig

    data = load_hcl(path)
    for plugin in data.get("plugin", []):
        if name in plugin:
            body = single(plugin[name]) or {}
            config = single(body.get("config", {})) or {}
            return anchor_paths(PluginConfig, dict(config), path.resolve().parent)
    raise ValueError(f'{path}: no plugin "{name}" block; add plugin "{name}" {{ config {{ ... }} }}')


def _refused(setting: Any, value: Any) -> bool:
    try:
        setting.validate(tuple(value) if isinstance(value, list) else value)
    except (ValueError, TypeError):
        return True
    return False


def anchor_paths(cls: type, body: dict[str, Any], base: Path) -> dict[str, Any]:
    """``body`` with each relative path that its setting refuses, but accepts once joined to
    ``base``, joined to ``base`` (in nested and repeated blocks too; python-hcl2's shapes kept)."""
    declared = {s.name: s for s in settings(cls)}
    anchored = dict(body)
    for key, value in body.items():
        setting = declared.get(key)
        if setting is None:
            continue
        if setting.block is not None:
            block_cls = setting.block
            if isinstance(value, list):
                anchored[key] = [anchor_paths(block_cls, v, base) if isinstance(v, dict) else v for v in value]
            elif isinstance(value, dict):
                anchored[key] = anchor_paths(block_cls, value, base)
            continue
        if setting.validate is None or not _refused(setting, value):
            continue
        if isinstance(value, str) and value and not value.startswith("/"):
            joined: Any = str(base / value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            joined = [v if v.startswith("/") else str(base / v) for v in value]
        else:
            continue
        if not _refused(setting, joined):
            anchored[key] = joined
    return anchored


def normalize(cls: type, body: dict[str, Any]) -> dict[str, Any]:
    """python-hcl2's shapes → Nomad's: every schema key present (None when unset), blocks as maps
    (nested ones too), repeated blocks as lists of maps, block-attribute maps as maps.

    Unknown keys are passed through, so the plugin (not this function) reports them.
    """
    declared = {s.name: s for s in settings(cls)}
    full: dict[str, Any] = dict.fromkeys(declared)
    for key, value in body.items():
        setting = declared.get(key)
        if setting is None:
            full[key] = value
        elif setting.block is not None and setting.repeated:
            items = value if isinstance(value, list) else [value]
            full[key] = [normalize(setting.block, item) if isinstance(item, dict) else item for item in items]
        elif setting.block is not None:
            inner = single(value)
            full[key] = normalize(setting.block, inner) if isinstance(inner, dict) else inner
        elif setting.hcl_type.startswith("map"):
            full[key] = single(value)
        else:
            full[key] = value
    return full


def encode_like_nomad(cls: type, body: dict[str, Any]) -> bytes:
    """Encode ``body`` for SetConfig/TaskConfig as Nomad would (see :func:`normalize`)."""
    packed: bytes = msgpack.packb(normalize(cls, body), use_bin_type=True)
    return packed
