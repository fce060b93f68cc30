"""HCL2 input variables in job files: declarations, Nomad's precedence, types, references, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_rkt_driver.cli.jobfile import JobFileError, load_job, rkt_tasks
from nomad_rkt_driver.cli.variables import VariableError, VarInputs, VarType, convert, parse_type

JOB = """
variable "registry" {
  type        = string
  default     = "127.0.0.1:5000"
  description = "registry host:port"
}
variable "replicas" {
  type    = number
  default = 1
}
variable "nets" {
  type    = list(string)
  default = ["none"]
}
variable "labels" {
  type    = map(string)
  default = { tier = "web" }
}
variable "debug" {
  default = false
}
job "j" {
  type = "batch"
  meta {
    registry = var.registry
  }
  group "g" {
    count = var.replicas
    task "t" {
      driver = "rkt"
      config {
        image   = "${var.registry}/team/web:v1"
        args    = [
          "${var.labels["tier"]} on ${NOMAD_TASK_NAME}", "${var.nets[0]}", "debug=${var.debug}", "$${var.registry}"
        ]
        net     = var.nets
        dns_search_domains = ["${var.labels.tier}.example"]
      }
    }
  }
}
"""


def write(tmp_path: Path, text: str = JOB, name: str = "j.nomad.hcl") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config(path: Path, inputs: VarInputs) -> dict[str, object]:
    (task,) = rkt_tasks(path, inputs)
    return task.config


def test_defaults_fill_references_keeping_types(tmp_path: Path) -> None:
    path = write(tmp_path)
    job = load_job(path, VarInputs(env={}))
    cfg = job.groups[0].tasks[0].config
    assert cfg["image"] == "127.0.0.1:5000/team/web:v1"
    assert cfg["net"] == ["none"]  # a whole-string reference keeps the list
    # embedded references become text; ${NOMAD_*} is left for runtime; $${ is HCL's escape
    assert cfg["args"] == ["web on ${NOMAD_TASK_NAME}", "none", "debug=false", "${var.registry}"]
    assert cfg["dns_search_domains"] == ["web.example"]
    assert job.meta == {"registry": "127.0.0.1:5000"}


def test_precedence_default_env_files_then_flags_later_wins(tmp_path: Path) -> None:
    path = write(tmp_path)
    first = tmp_path / "a.vars.hcl"
    first.write_text('registry = "from-file-a:1"\nnets = ["host"]\n')
    second = tmp_path / "b.vars.json"
    second.write_text('{"registry": "from-file-b:2"}')
    env = {"NOMAD_VAR_registry": "from-env:0", "NOMAD_VAR_nets": '["default"]', "NOMAD_VAR_unknown": "ignored"}

    assert config(path, VarInputs(env=env))["image"] == "from-env:0/team/web:v1"
    assert config(path, VarInputs(env=env))["net"] == ["default"]
    assert config(path, VarInputs(files=(first,), env=env))["image"] == "from-file-a:1/team/web:v1"
    both = config(path, VarInputs(files=(first, second), env=env))
    assert both["image"] == "from-file-b:2/team/web:v1" and both["net"] == ["host"]
    flags = VarInputs(args=("registry=flag:3", "registry=flag:4"), files=(first, second), env=env)
    assert config(path, flags)["image"] == "flag:4/team/web:v1"


def test_flag_values_follow_the_type(tmp_path: Path) -> None:
    path = write(tmp_path)
    inputs = VarInputs(args=('nets=["a", "b"]', 'labels={ tier = "db" }', "debug=true", "replicas=3"), env={})
    job = load_job(path, inputs)
    cfg = job.groups[0].tasks[0].config
    assert cfg["net"] == ["a", "b"]
    assert cfg["args"][0] == "db on ${NOMAD_TASK_NAME}" and cfg["args"][2] == "debug=true"


def test_required_variable_without_value_names_it_and_the_ways_to_set_it(tmp_path: Path) -> None:
    path = write(tmp_path, JOB.replace('  default     = "127.0.0.1:5000"\n', ""))
    with pytest.raises(JobFileError) as info:
        load_job(path, VarInputs(env={}))
    message = str(info.value)
    assert 'variable "registry" (registry host:port) has no value' in message
    assert "-var 'registry=VALUE'" in message and "NOMAD_VAR_registry" in message and "-var-file" in message
    assert load_job(path, VarInputs(env={"NOMAD_VAR_registry": "r:1"})).meta == {"registry": "r:1"}


def test_unknown_variables_from_flags_and_files_are_errors_but_env_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path)
    with pytest.raises(JobFileError, match=r'undefined variable: "regsitry" was passed with -var.*variable "regsitry"'):
        load_job(path, VarInputs(args=("regsitry=x",), env={}))
    stray = tmp_path / "stray.hcl"
    stray.write_text('other = "x"\n')
    with pytest.raises(JobFileError, match=f'"other" was set in {stray}'):
        load_job(path, VarInputs(files=(stray,), env={}))
    declaring = tmp_path / "declaring.hcl"
    declaring.write_text('variable "registry" {\n default = "x"\n}\n')
    with pytest.raises(JobFileError, match="write registry = <value> instead of a variable block"):
        load_job(path, VarInputs(files=(declaring,), env={}))
    with pytest.raises(JobFileError, match=r"-var-file .*missing.hcl: No such file"):
        load_job(path, VarInputs(files=(tmp_path / "missing.hcl",), env={}))


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("registry", "expected NAME=VALUE"),
        ("replicas=many", '"many" is not compatible with the variable\'s type constraint number'),
        ("nets=[1, [2]]", r"-var nets\[1\]: \[2\] is not compatible .* constraint string"),
        ("debug=maybe", "is not a valid HCL expression|not compatible"),
    ],
)
def test_bad_flag_values_are_refused_naming_the_variable(tmp_path: Path, arg: str, message: str) -> None:
    with pytest.raises(JobFileError, match=message):
        load_job(write(tmp_path), VarInputs(args=(arg,), env={}))


def test_references_we_cannot_evaluate_are_refused_not_passed_through(tmp_path: Path) -> None:
    text = JOB.replace('"${var.nets[0]}"', '"${upper(var.registry)}"')
    with pytest.raises(JobFileError, match=r"config\.args\[1\]: \$\{upper\(var.registry\)\} is not supported"):
        load_job(write(tmp_path, text), VarInputs(env={}))
    undeclared = JOB.replace("var.nets[0]", "var.networks[0]")
    with pytest.raises(JobFileError, match='undeclared input variable "networks"'):
        load_job(write(tmp_path, undeclared), VarInputs(env={}))
    embedded_list = JOB.replace('"${var.nets[0]}"', '"nets: ${var.nets}"')
    with pytest.raises(JobFileError, match="cannot be part of a string"):
        load_job(write(tmp_path, embedded_list), VarInputs(env={}))
    out_of_range = JOB.replace("var.nets[0]", "var.nets[3]")
    with pytest.raises(JobFileError, match=r"var\.nets has no element 3"):
        load_job(write(tmp_path, out_of_range), VarInputs(env={}))


def test_a_default_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    text = JOB.replace("default = 1", 'default = "one"')
    with pytest.raises(JobFileError, match='variable "replicas" default: "one" is not compatible'):
        load_job(write(tmp_path, text), VarInputs(env={}))


def test_types_and_conversions() -> None:
    assert parse_type("string", "w") == VarType("string")
    assert parse_type("${list(map(number))}", "w") == VarType("list", VarType("map", VarType("number")))
    assert parse_type("${object({a = string})}", "w").kind == "object"
    with pytest.raises(VariableError, match="is not a type"):
        parse_type("strnig", "w")
    assert convert("3", VarType("number"), "w") == 3 and convert("2.5", VarType("number"), "w") == 2.5
    assert convert(3, VarType("string"), "w") == "3" and convert(True, VarType("string"), "w") == "true"
    assert convert(["a", "a", "b"], VarType("set", VarType("string")), "w") == ["a", "b"]
    with pytest.raises(VariableError):
        convert({"a": 1}, VarType("list", VarType("string")), "w")
