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
    if setting.block is not None:
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
