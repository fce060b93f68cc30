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
    """The ``config {}`` body of ``plugin "<name>"`` in ``path`` ({} when absent)."""
    data = load_hcl(path)
    for plugin in data.get("plugin", []):
        if name in plugin:
            body = single(plugin[name]) or {}
            config = single(body.get("config", {})) or {}
            return dict(config)
    raise ValueError(f'{path}: no plugin "{name}" block; add plugin "{name}" {{ config {{ ... }} }}')


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
