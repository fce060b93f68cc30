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
    # Repeated blocks have no default instance, and options without a default have no value to show:
    # both are shown commented out.
    shown = {s.name for s in settings(PluginConfig) if not s.repeated and (s.has_default or s.block is not None)}
    assert set(config) == shown
    for s in settings(PluginConfig):
        if s.name not in shown and not s.repeated:
            assert f"# {s.name} = <{s.hcl_type}>" in plugin_hcl()
    assert "# trust {" in plugin_hcl()
    assert config["runtime"] == "runc" and config["fingerprint_period"] == "30s"


def test_the_shipped_plugin_hcl_decodes_to_the_defaults(tmp_path: Path) -> None:
    from nomad_rkt_driver.cli.hclfile import encode_like_nomad, plugin_block
    from nomad_rkt_driver.config.decode import decode_msgpack

    shipped = decode_msgpack(PluginConfig, encode_like_nomad(PluginConfig, plugin_block(ROOT / "plugin.hcl")), "x")
    assert shipped == PluginConfig()


def test_nested_and_repeated_blocks_from_hcl(tmp_path: Path) -> None:
    from nomad_rkt_driver.cli.hclfile import encode_like_nomad, plugin_block
    from nomad_rkt_driver.config.decode import decode_msgpack

    path = tmp_path / "agent.hcl"
    path.write_text("""plugin "rkt" {
  config {
    vault {
      address = "https://vault.example.com:8200"
      auth {
        approle {
          role_id        = "r-1"
          secret_id_file = "/etc/secret-id"
        }
      }
    }
    trust {
      prefix     = "registry.example.com/a"
      vault_path = "secret/data/keys/a"
    }
    trust {
      prefix     = "registry.example.com/b"
      vault_path = "secret/data/keys/b"
    }
    gc {
      image_delay = "10m"
    }
  }
}
""")
    config = decode_msgpack(PluginConfig, encode_like_nomad(PluginConfig, plugin_block(path)), "x")
    assert config.vault.address == "https://vault.example.com:8200"
    assert config.vault.auth.approle.role_id == "r-1" and config.vault.auth.approle.mount == "approle"
    assert [t.prefix for t in config.trust] == ["registry.example.com/a", "registry.example.com/b"]
    assert config.gc.image and float(config.gc.image_delay) == 600.0
