"""The HCL expression evaluator (hclexpr + hclfuncs): each operator, precedence, templates, functions and errors."""

from __future__ import annotations

from typing import Any

import pytest

from nomad_rkt_driver.cli.hclexpr import Scope, evaluate, parse, references, render
from nomad_rkt_driver.cli.hclfuncs import ExprError, HclError, Unsupported

SCOPE = Scope(
    {
        "port": 8080,
        "name": "Web-1",
        "nets": ["bridge", "none"],
        "labels": {"tier": "web", "zone": "a"},
        "servers": [{"host": "a", "port": 1}],
        "debug": False,
        "text": "5",
        "nothing": None,
    },
    {"base": 10},
)


def ev(source: str) -> Any:
    return evaluate(parse(source), SCOPE)


@pytest.mark.parametrize(
    ("source", "value"),
    [
        # literals
        ("42", 42),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ('"a\\"b\\\\c\\n\\u00e9"', 'a"b\\c\né'),
        ("true", True),
        ("null", None),
        ('[1, "a", [true], ]', [1, "a", [True]]),
        ('{ a = 1, "b" = 2, c: 3 }', {"a": 1, "b": 2, "c": 3}),
        ('"$${x} %%{y}"', "${x} %{y}"),
        # references
        ("var.port", 8080),
        ("local.base", 10),
        ("var.nets[1]", "none"),
        ('var.labels["tier"]', "web"),
        ("var.labels.zone", "a"),
        ("var.servers[0].host", "a"),
        ("var.servers.0.port", 1),
        ('var.nets["0"]', "bridge"),
        # arithmetic: numbers from strings, integral results stay whole
        ("1 + 2", 3),
        ("var.text + 1", 6),
        ("7 - 10", -3),
        ("6 * 7", 42),
        ("7 / 2", 3.5),
        ("8 / 2", 4),
        ("7 % 3", 1),
        ("-7 % 3", -1),
        ("-var.port", -8080),
        ("5 - -3", 8),
        # comparison and equality (no conversion for ==)
        ("var.port > 1024", True),
        ("var.port >= 8080", True),
        ("var.port < 8080", False),
        ("var.port <= 8080", True),
        ('var.text < "10"', True),
        ('1 == "1"', False),
        ("1 == 1.0", True),
        ("true != 1", True),
        ('var.nets == ["bridge", "none"]', True),
        ("var.nothing == null", True),
        # logic, short-circuit: the right side is not evaluated once the left decides
        ("true && false", False),
        ("false || true", True),
        ("!var.debug", True),
        ('"true" && true', True),
        ("var.nothing != null && var.nothing.missing", False),
        ("var.nothing == null || var.nothing.missing", True),
        # conditional: only the chosen branch is evaluated
        ('var.debug ? "-v" : "-q"', "-q"),
        ("var.port > 1 ? var.port : var.missing", 8080),
        ("false ? 1 : true ? 2 : 3", 2),
        # precedence
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("2 * 3 % 4", 2),
        ("1 + 1 == 2 && 3 > 2", True),
        ("true || false && false", True),
        ("!true || true", True),
        ("1 < 2 == true", True),
        ("-2 * -2", 4),
        # templates
        ('"${var.name}:${var.port}"', "Web-1:8080"),
        ('"${var.port}"', 8080),
        ('"n=${var.port + 1} ${var.debug}"', "n=8081 false"),
        ('"${var.debug ? "a" : "b"}!"', "b!"),
    ],
)
def test_values(source: str, value: Any) -> None:
    result = ev(source)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("length(var.nets)", 2),
        ("length(var.labels)", 2),
        ('length("héllo")', 5),
        ('contains(var.nets, "none")', True),
        ('contains([1, 2], "1")', False),
        ('can(var.labels["missing"])', False),
        ("can(var.labels.tier)", True),
        ('regex("[a-z]+", "12abc34")', "abc"),
        ('regex("(\\\\d+)-(\\\\d+)", "v10-20")', ["10", "20"]),
        ('regex("(?P<major>\\\\d+)\\\\.(?P<minor>\\\\d+)", "1.25")', {"major": "1", "minor": "25"}),
        ('regexall("\\\\d", "a1b2")', ["1", "2"]),
        ('regexall("x", "abc")', []),
        ('can(regex("^[a-z]+\\\\z", "abc"))', True),
        ("lower(var.name)", "web-1"),
        ("upper(var.name)", "WEB-1"),
        ('trimspace("  x \\n")', "x"),
        ('startswith(var.name, "Web")', True),
        ('endswith(var.name, "2")', False),
        ('tonumber("3.5")', 3.5),
        ('tonumber("12")', 12),
        ("tostring(12)", "12"),
        ("tostring(true)", "true"),
        ('concat(var.nets, ["x"], [])', ["bridge", "none", "x"]),
        ('join(",", var.nets)', "bridge,none"),
        ('join("-", [1, true])', "1-true"),
        ('split(",", "a,b,,c")', ["a", "b", "", "c"]),
        ('format("%s:%d", "h", 80)', "h:80"),
        (
            'format("%05d|%-4s|%.2f|%t|%q|%v|%%|%x", 42, "ab", 3.14159, true, "q", var.nets, 255)',
            '00042|ab  |3.14|true|"q"|["bridge","none"]|%|ff',
        ),
    ],
)
def test_functions(source: str, value: Any) -> None:
    result = ev(source)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("var.missing", 'undeclared input variable "missing"'),
        ("local.missing", 'undeclared local value "missing"'),
        ("var.nets[5]", r"var\.nets has no element 5"),
        ('var.labels["x"]', r'var\.labels has no element "x"'),
        ("var.nothing.x", "is null"),
        ("var", "var alone is not a value"),
        ("var.name + 1", r'"Web-1", a string; a number is required'),
        ("var.nets > 1", "a number is required"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("var.port && true", "a bool is required"),
        ("var.port ? 1 : 2", "condition of"),
        ("!var.name", "a bool is required"),
        ("length(var.port)", r"length\(\) of a number"),
        ('regex("z", "abc")', "does not match"),
        ('regex("(", "abc")', "is invalid"),
        ('format("%d", "x")', "a number is required"),
        ('format("%d", 1.5)', "whole number"),
        ('format("%s %s", "x")', "not enough arguments"),
        ('format("%s", "x", "y")', "too many arguments"),
        ("lower(var.nets)", "cannot be used as a string"),
        ('join(",", var.port)', r"join\(\) needs a list"),
        ("upper()", r"upper\(\) takes 1 argument, got 0"),
        ("concat()", r"concat\(\) takes at least 1 argument"),
        ('tonumber("x")', "a number is required"),
        ("1 +", "ends where a value was expected"),
        ("(1", r"expected '\)'"),
        ("1 2", "unexpected '2'"),
        ('"open', "not closed"),
        ('"\\q"', "unknown escape"),
        ("{ a 1 }", "expected '=' or ':'"),
        ("attr.kernel.name", "not known here"),
    ],
)
def test_errors_are_expr_errors_naming_the_problem(source: str, message: str) -> None:
    with pytest.raises(ExprError, match=message):
        ev(source)


@pytest.mark.parametrize(
    ("source", "construct"),
    [
        ("uuidv4()", r"function uuidv4\(\)"),
        ("can(uuidv4())", r"function uuidv4\(\)"),  # can() does not hide what we cannot evaluate
        ("[for n in var.nets : n]", "for expressions"),
        ("{for k, v in var.labels : k => v}", "for expressions"),
        ("var.servers[*].host", r"splat"),
        ("var.servers.*.host", r"splat"),
        ("concat(var.nets...)", r"expansion"),
        ('"%{ if var.debug }x%{ endif }"', "template directives"),
        ('regex("a(?=b)", "ab")', "lookaround"),
        ('regex("(a)\\\\1", "aa")', "backreferences"),
        ('regex("[[:alpha:]]", "a")', "POSIX classes"),
        ('format("%[1]s", "x")', r"format verb %\["),
        ("1 ~ 2", "character '~'"),
    ],
)
def test_unsupported_constructs_are_named(source: str, construct: str) -> None:
    with pytest.raises(Unsupported, match=construct):
        ev(source)


def test_render_keeps_runtime_interpolations_and_types() -> None:
    assert render("${var.nets}", SCOPE) == ["bridge", "none"]
    assert render("${NOMAD_TASK_NAME}", SCOPE) == "${NOMAD_TASK_NAME}"
    assert render("${NOMAD_ALLOC_DIR}/${var.name}/${attr.unique.network.ip-address}", SCOPE) == (
        "${NOMAD_ALLOC_DIR}/Web-1/${attr.unique.network.ip-address}"
    )
    assert render('${env["HOME"]}', SCOPE) == '${env["HOME"]}'
    assert render("${weird syntax here} ${var.port}", SCOPE) == "${weird syntax here} 8080"
    assert render("$${var.port} 100%", SCOPE) == "${var.port} 100%"
    assert render('quote "in" ${upper("s")}', SCOPE) == 'quote "in" S'
    with pytest.raises(ExprError, match="cannot be part of a string") as info:
        render("nets: ${var.nets}", SCOPE)
    assert info.value.source == "${var.nets}"
    with pytest.raises(HclError, match="expected") as broken:
        render("${var.port +}", SCOPE)  # uses a variable: an error, not left for the runtime
    assert broken.value.source == "${var.port +}"


def test_references_lists_the_roots() -> None:
    assert references("${local.a}-${var.b[local.c]} ${NOMAD_TASK_NAME} ${upper(local.d)}") == {
        ("local", "a"),
        ("var", "b"),
        ("local", "c"),
        ("NOMAD_TASK_NAME", ""),
        ("local", "d"),
    }
