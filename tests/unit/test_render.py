from pathlib import Path

import hcl2
from hcl2 import SerializationOptions

from nomad_rkt_driver.config.fields import settings
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.render import plugin_hcl

ROOT = Path(__file__).resolve().parents[2]


def test_plugin_hcl_in_the_repo_matches_the_declaration() -> None:
    assert (ROOT / "plugin.hcl").read_text() == plugin_hcl(), "run `make plugin.hcl` and commit the result"


def test_plugin_hcl_shows_every_option_at_its_default() -> None:
    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    parsed = hcl2.loads(plugin_hcl(), serialization_options=options)
    config = parsed["plugin"][0]["rkt"]["config"][0]
    # Repeated blocks have no default instance: they are shown as a commented example.
    assert set(config) == {s.name for s in settings(PluginConfig) if not s.repeated}
    assert "# trust {" in plugin_hcl()
    assert config["runtime"] == "runc" and config["fingerprint_period"] == "30s"
