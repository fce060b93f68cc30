"""Every job in jobs/ has rkt task configs the driver accepts (decoded exactly as StartTask does)."""

from pathlib import Path

import pytest

from nomad_rkt_driver.cli.hclfile import encode_like_nomad
from nomad_rkt_driver.cli.jobfile import rkt_tasks
from nomad_rkt_driver.config.decode import decode_msgpack
from nomad_rkt_driver.config.task import TaskConfig
from nomad_rkt_driver.errors import InvalidConfig

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.nomad.hcl"))


def test_there_are_example_jobs() -> None:
    assert {p.name for p in JOBS} >= {"web.nomad.hcl", "hello.nomad.hcl"}


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
