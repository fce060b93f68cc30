"""Every job in jobs/ has rkt task configs the driver accepts (decoded exactly as StartTask does)."""

from pathlib import Path

import pytest

from nomad_rkt_driver.cli.hclfile import encode_like_nomad, plugin_block
from nomad_rkt_driver.cli.jobfile import rkt_tasks
from nomad_rkt_driver.config.decode import decode_msgpack
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.errors import InvalidConfig
from nomad_rkt_driver.network import conflist

JOBS_DIR = Path(__file__).resolve().parents[2] / "jobs"
JOBS = sorted(JOBS_DIR.glob("*.nomad.hcl"))
PLUGIN_FILES = sorted(JOBS_DIR.glob("*.plugin.hcl"))


def test_there_are_example_jobs() -> None:
    assert {p.name for p in JOBS} >= {
        "web.nomad.hcl",
        "hello.nomad.hcl",
        "vault-registry.nomad.hcl",
        "bridge.nomad.hcl",
        "cni-network.nomad.hcl",
    }
    assert {p.name for p in PLUGIN_FILES} >= {"vault-registry.plugin.hcl", "cni-network.plugin.hcl"}


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: p.name)
def test_example_plugin_configs_are_valid(path: Path) -> None:
    decode_msgpack(PluginConfig, encode_like_nomad(PluginConfig, plugin_block(path)), path.name)


def test_cni_network_example_names_a_shipped_conflist_its_plugin_config_points_at() -> None:
    (task,) = rkt_tasks(JOBS_DIR / "cni-network.nomad.hcl")
    config = decode_msgpack(
        PluginConfig, encode_like_nomad(PluginConfig, plugin_block(JOBS_DIR / "cni-network.plugin.hcl")), "b"
    )
    assert config.cni_config_dir == str(JOBS_DIR / "cni")  # relative to the plugin file
    (network,) = conflist.select(tuple(task.config["net"]), config.cni_config_dir, "10.0.0.0/24", "/tmp/ipam", "cni")
    assert [p["type"] for p in network.plugins] == ["bridge", "portmap"]
    assert network.plugins[0]["ipam"]["type"] == "host-local"


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_job_rkt_configs_are_valid(job: Path) -> None:
    tasks = rkt_tasks(job)
    assert tasks, f"{job.name} has no rkt task"
    for task in tasks:
        decode_msgpack(TaskConfig, encode_like_nomad(TaskConfig, task.config), f"{job.name} task {task.task}")


def test_web_job_maps_its_dynamic_port_onto_the_named_image_port() -> None:
    (task,) = rkt_tasks(JOBS[[p.name for p in JOBS].index("web.nomad.hcl")])
    config = decode_msgpack(TaskConfig, encode_like_nomad(TaskConfig, task.config), "web")
    assert config.port_map == {"http": "8080-tcp"}


def test_a_bad_job_config_is_refused_naming_the_attribute(tmp_path: Path) -> None:
    job = tmp_path / "bad.nomad.hcl"
    job.write_text(
        'job "j" {\n group "g" {\n  task "t" {\n   driver = "rkt"\n'
        '   config {\n    image = "busybox"\n    insecure_options = ["everything"]\n   }\n  }\n }\n}\n'
    )
    (task,) = rkt_tasks(job)
    with pytest.raises(InvalidConfig) as info:
        decode_msgpack(TaskConfig, encode_like_nomad(TaskConfig, task.config), "bad.nomad.hcl task t")
    assert info.value.attribute == "insecure_options"
