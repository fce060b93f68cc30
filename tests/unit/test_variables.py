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
    text = JOB.replace('"${var.nets[0]}"', '"${uuidv5(var.registry)}"')
    with pytest.raises(
        JobFileError, match=r"config\.args\[1\]: \$\{uuidv5\(var.registry\)\} is not supported.*function uuidv5\(\)"
    ):
        load_job(write(tmp_path, text), VarInputs(env={}))
    splat = JOB.replace('"${var.nets[0]}"', '"${var.nets[*]}"')
    with pytest.raises(JobFileError, match=r"\$\{var.nets\[\*\]\} is not supported.*splat"):
        load_job(write(tmp_path, splat), VarInputs(env={}))
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


def test_expressions_in_the_job_body_are_evaluated(tmp_path: Path) -> None:
    text = JOB.replace('"${var.nets[0]}"', '"${upper(var.labels.tier)}-${var.replicas * 2 + 1}"').replace(
        '"debug=${var.debug}"', 'var.debug ? "-v" : "-q"'
    )
    job = load_job(write(tmp_path, text), VarInputs(args=("replicas=2",), env={}))
    assert job.groups[0].tasks[0].config["args"][1:3] == ["WEB-5", "-q"]


VALIDATED = """
variable "port" {
  type    = number
  default = 8080
  validation {
    condition     = var.port > 1024 && var.port < 65536
    error_message = "The port must be between 1025 and 65535, not ${var.port}."
  }
}
variable "name" {
  type    = string
  default = "web"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*$", var.name))
    error_message = "The name is lower-case letters, digits and dashes."
  }
  validation {
    condition     = length(var.name) <= 8
    error_message = "The name has at most 8 characters."
  }
}
locals {
  address = "${local.host}:${var.port}"
  host    = "${var.name}.${local.domain}"
}
locals {
  domain  = "example"
  args    = concat(["--port", tostring(var.port)], var.port == 8080 ? ["--default"] : [])
}
job "j" {
  group "g" {
    task "t" {
      driver = "rkt"
      config {
        image = "oci:x"
        args  = local.args
        dns_search_domains = ["${local.address}"]
      }
    }
  }
}
"""


def test_validation_rules_pass_and_fail_naming_the_variable_and_the_source(tmp_path: Path) -> None:
    path = write(tmp_path, VALIDATED)
    assert config(path, VarInputs(env={}))["args"] == ["--port", "8080", "--default"]
    with pytest.raises(JobFileError) as info:
        load_job(path, VarInputs(args=("port=80",), env={}))
    message = str(info.value)
    assert "Invalid value for variable: The port must be between 1025 and 65535, not 80." in message
    assert 'variable "port" = 80 (from -var)' in message and "var.port > 1024 && var.port < 65536" in message
    with pytest.raises(JobFileError, match=r'"name" = "Web" \(from NOMAD_VAR_name in the environment\).*rule 1'):
        load_job(path, VarInputs(env={"NOMAD_VAR_name": "Web"}))
    varfile = tmp_path / "v.hcl"
    varfile.write_text('name = "webserver1"\n')
    with pytest.raises(JobFileError, match=rf"(?s)at most 8 characters.*from -var-file {varfile}\).*rule 2"):
        load_job(path, VarInputs(files=(varfile,), env={}))
    bad_default = VALIDATED.replace("default = 8080", "default = 80")
    with pytest.raises(JobFileError, match=r"= 80 \(from the default\)"):
        load_job(write(tmp_path, bad_default), VarInputs(env={}))


def test_validation_blocks_that_cannot_be_checked_are_errors(tmp_path: Path) -> None:
    not_bool = VALIDATED.replace("var.port > 1024 && var.port < 65536", "var.port + 1")
    with pytest.raises(JobFileError, match=r'variable "port" validation: condition must be true or false, it is 8081'):
        load_job(write(tmp_path, not_bool), VarInputs(env={}))
    unsupported = VALIDATED.replace("length(var.name) <= 8", 'alltrue([var.name != ""])')
    with pytest.raises(JobFileError, match=r"condition: \$\{alltrue.*is not supported.*function alltrue\(\)"):
        load_job(write(tmp_path, unsupported), VarInputs(env={}))
    missing = VALIDATED.replace('    error_message = "The name has at most 8 characters."\n', "")
    with pytest.raises(JobFileError, match="expected exactly condition and error_message"):
        load_job(write(tmp_path, missing), VarInputs(env={}))


def test_locals_are_evaluated_in_dependency_order(tmp_path: Path) -> None:
    cfg = config(write(tmp_path, VALIDATED), VarInputs(args=("port=9000", "name=api"), env={}))
    assert cfg["dns_search_domains"] == ["api.example:9000"]  # address uses host, which uses domain
    assert cfg["args"] == ["--port", "9000"]


def test_locals_cycles_undeclared_and_duplicates_are_errors_naming_them(tmp_path: Path) -> None:
    cycle = VALIDATED.replace('domain  = "example"', "domain  = local.address")
    with pytest.raises(JobFileError, match=r"cycle: local\.address -> local\.host -> local\.domain -> local\.address"):
        load_job(write(tmp_path, cycle), VarInputs(env={}))
    undeclared = VALIDATED.replace("local.domain}", "local.domian}")
    with pytest.raises(JobFileError, match=r'local\.host: reference to undeclared local value "domian"'):
        load_job(write(tmp_path, undeclared), VarInputs(env={}))
    twice = VALIDATED.replace('domain  = "example"', 'domain  = "example"\n  host = "x"')
    with pytest.raises(JobFileError, match='local value "host" is defined twice'):
        load_job(write(tmp_path, twice), VarInputs(env={}))
    in_job = VALIDATED.replace("args  = local.args", "args  = local.argv")
    undeclared_in_job = r'config\.args: \$\{local\.argv\}: reference to undeclared local value "argv"'
    with pytest.raises(JobFileError, match=undeclared_in_job):
        load_job(write(tmp_path, in_job), VarInputs(env={}))
