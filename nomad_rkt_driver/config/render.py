"""Human-facing renderings of the declared configs: the agent's plugin block (``plugin.hcl``)."""

from __future__ import annotations

import textwrap

from nomad_rkt_driver.config.fields import Setting, hcl_literal, settings
from nomad_rkt_driver.config.plugin import PluginConfig

HEADER = """\
# The Nomad agent's configuration for the rkt task driver. Paste this into the agent's config
# (or pass it with -config=plugin.hcl) and put the nomad-rkt-driver executable, named "rkt",
# in the agent's plugin_dir. Every option is shown with its default.
# Generated from nomad_rkt_driver/config/plugin.py: run `make plugin.hcl` after changing it.
"""


def _attribute(setting: Setting, indent: str) -> list[str]:
    lines = [indent + "# " + line for line in textwrap.wrap(setting.doc, 96 - len(indent))]
    if setting.block is not None and setting.repeated:
        lines.append(f"{indent}# {setting.name} {{   (repeat as needed; none by default)")
        lines += [f"{indent}#   {inner.name} = <{inner.hcl_type}>" for inner in settings(setting.block)]
        lines.append(f"{indent}# }}")
    elif setting.block is not None:
        lines.append(f"{indent}{setting.name} {{")
        for inner in settings(setting.block):
            lines += _attribute(inner, indent + "  ")
        lines.append(f"{indent}}}")
    elif setting.has_default:
        lines.append(f"{indent}{setting.name} = {hcl_literal(setting.default)}")
    else:
        lines.append(f"{indent}# {setting.name} = <{setting.hcl_type}>   (no default)")
    return lines


def plugin_hcl(name: str = "rkt") -> str:
    """The ``plugin "rkt" { config { ... } }`` block with every option at its default."""
    body: list[str] = []
    for setting in settings(PluginConfig):
        body += _attribute(setting, "    ")
        body.append("")
    return HEADER + f'\nplugin "{name}" {{\n  config {{\n' + "\n".join(body).rstrip() + "\n  }\n}\n"


def _type_of(setting: Setting) -> str:
    if setting.block is not None:
        return "blocks" if setting.repeated else "block"
    if setting.block_attrs:
        return f"block of {setting.hcl_type.removeprefix('map(').removesuffix(')')} attributes"
    return setting.hcl_type


def _default_of(setting: Setting) -> str:
    if setting.required:
        return "required"
    if setting.has_default and setting.block is None:
        return f"`{hcl_literal(setting.default)}`"
    return "unset"


def _rows(cls: type, prefix: str) -> list[str]:
    """One row per setting; a block's own settings follow it with dotted names (``gc.image_delay``)."""
    rows = []
    for s in settings(cls):
        meaning = s.doc.replace("|", r"\|")
        rows.append(f"| `{prefix}{s.name}` | {_type_of(s)} | {_default_of(s)} | {meaning} |")
        if s.block is not None:
            rows += _rows(s.block, f"{prefix}{s.name}.")
    return rows


def _table(cls: type) -> list[str]:
    return ["| name | type | default | meaning |", "|---|---|---|---|", *_rows(cls, "")]


def reference_md() -> str:
    """docs/configuration.md: both configs as tables, from their declarations."""
    from nomad_rkt_driver.config.task import TaskConfig

    lines = [
        "# Configuration reference",
        "",
        "Generated from `nomad_rkt_driver/config/plugin.py` and `config/task.py` (`make docs`); a test keeps",
        "this file equal to the declarations, which are also what the plugin returns from ConfigSchema and",
        "TaskConfigSchema.",
        "",
        "Task options are validated by Nomad (through the schema) and again by StartTask today; they take",
        "effect as the images, pods and networks work lands (see the README's status table).",
        "",
        '## Agent: `plugin "rkt" { config { ... } }`',
        "",
        *_table(PluginConfig),
        "",
        '## Job: `task "x" { driver = "rkt" config { ... } }`',
        "",
        *_table(TaskConfig),
        "",
    ]
    return "\n".join(lines)
