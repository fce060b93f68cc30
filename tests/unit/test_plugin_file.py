"""A --plugin-config file's relative paths are taken from the file's own directory."""

from pathlib import Path

from nomad_rkt_driver.cli.hclfile import plugin_block


def test_relative_paths_are_anchored_at_the_plugin_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "plugin.hcl"
    path.parent.mkdir()
    path.write_text(
        'plugin "rkt" {\n  config {\n    cni_config_dir = "cni"\n    data_dir = "/var/lib/x"\n'
        '    runtime = "runc"\n    cni_path = ["bin", "/usr/lib/cni"]\n'
        '    vault {\n      auth {\n        token_file = "../token"\n      }\n    }\n'
        '    trust {\n      prefix = "example.com/app"\n      vault_path = "secret/data/keys"\n    }\n  }\n}\n'
    )
    body = plugin_block(path)
    base = tmp_path / "conf"
    assert body["cni_config_dir"] == str(base / "cni")
    assert body["data_dir"] == "/var/lib/x"  # absolute: as written
    assert body["runtime"] == "runc"  # a bare program name is looked up in PATH, not a path
    assert body["cni_path"] == [str(base / "bin"), "/usr/lib/cni"]
    assert body["vault"] == [{"auth": [{"token_file": str(base / "../token")}]}]
    assert body["trust"] == [{"prefix": "example.com/app", "vault_path": "secret/data/keys"}]  # not paths on disk
