"""HCL2 input variables in job files, as ``nomad job run`` takes them.

``variable "name" { type, default, description }`` blocks declare them; values come, later ones
winning, from the default, ``NOMAD_VAR_<name>`` in the environment, each ``-var-file`` in order
and each ``-var NAME=VALUE`` in order. References (``var.name``, ``"${var.name}"``, with ``[0]``,
``["key"]`` or ``.attr`` after them) are replaced before the job is read: a string that is only
one reference takes the variable's own type (a list stays a list), one inside a longer string
is spliced in as text. ``$${`` is HCL's escape for a literal ``${``.

Only plain references are evaluated: an expression that uses a variable together with a function
or an operator is refused with a message saying so; ``${...}`` without ``var.`` (``NOMAD_*``,
``attr.*``) is left for the runtime interpolation, as Nomad leaves it for the client.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ENV_PREFIX: Final = "NOMAD_VAR_"
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_REFERENCE: Final = re.compile(rf"^var\.({_NAME})((?:\[[^\[\]]+\]|\.{_NAME})*)$")
_STEP: Final = re.compile(rf"\[\s*(\"(?:[^\"\\]|\\.)*\"|-?\d+)\s*\]|\.({_NAME})")
_USES_VAR: Final = re.compile(r"(?<![\w.])var\.")
_PRIMITIVES: Final = ("string", "number", "bool", "any")
_COLLECTIONS: Final = ("list", "set", "map")


class VariableError(ValueError):
    """An input variable is missing, unknown, of the wrong type or used in a way we cannot evaluate."""


@dataclass(frozen=True)
class VarInputs:
    """Values given outside the job file: ``-var`` flags and ``-var-file`` files, in command-line order."""

    args: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    env: Mapping[str, str] | None = None  # None: this process's environment


@dataclass(frozen=True)
class VarType:
    """A type constraint: a primitive, ``any``, list/set/map of a type, or object/tuple (shape unchecked)."""

    kind: str  # string number bool any list set map object tuple
    element: VarType | None = None

    def __str__(self) -> str:
        return f"{self.kind}({self.element})" if self.element is not None else self.kind

    @property
    def literal(self) -> bool:
        """CLI and env values of these types are taken as text, not parsed as HCL (Nomad's rule)."""
        return self.kind in ("string", "number")


@dataclass
class Variable:
    name: str
    type: VarType | None
    description: str = ""
    value: Any = None
    source: str = ""  # "default", "env", "file <path>", "-var": where the current value came from
    has_value: bool = field(default=False)


def parse_type(text: str, where: str) -> VarType:
    """python-hcl2 gives ``string`` for a bare keyword and ``${list(string)}`` for a call."""
    expr = text.strip()
    if expr.startswith("${") and expr.endswith("}"):
        expr = expr[2:-1].strip()
    if expr in _PRIMITIVES:
        return VarType(expr)
    call = re.fullmatch(r"(\w+)\s*\((.*)\)", expr, re.DOTALL)
    if call and call.group(1) in _COLLECTIONS:
        return VarType(call.group(1), parse_type(call.group(2), where))
    if call and call.group(1) in ("object", "tuple"):
        return VarType(call.group(1))
    raise VariableError(
        f"{where}: type = {expr} is not a type; use string, number, bool, any, list(T), set(T), map(T), "
        "object({...}) or tuple([...])"
    )


def _infer(value: Any) -> VarType:
    # A variable without a type takes its default's (cty: a literal list is a tuple, a literal map an object).
    if isinstance(value, bool):
        return VarType("bool")
    if isinstance(value, int | float):
        return VarType("number")
    if isinstance(value, list):
        return VarType("tuple")
    if isinstance(value, dict):
        return VarType("object")
    return VarType("string")


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)


def convert(value: Any, kind: VarType | None, what: str) -> Any:
    """``value`` as type ``kind`` (HCL's safe conversions: "3" → 3, true → "true"); VariableError if impossible."""
    if kind is None or kind.kind == "any":
        return value

    def refuse(wanted: str) -> VariableError:
        return VariableError(
            f"{what}: {json.dumps(value)} is not compatible with the variable's type constraint {kind}: "
            f"{wanted} required"
        )

    if kind.kind == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return _number_text(value)
        if isinstance(value, str):
            return value
        raise refuse("string")
    if kind.kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise refuse("number") from None
            return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
        raise refuse("number")
    if kind.kind == "bool":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise refuse("bool")
    if kind.kind in ("list", "set", "tuple"):
        if not isinstance(value, list):
            raise refuse("list")
        items = [convert(item, kind.element, f"{what}[{i}]") for i, item in enumerate(value)]
        if kind.kind == "set":
            unique: list[Any] = []
            for item in items:
                if item not in unique:
                    unique.append(item)
            return unique
        return items
    if kind.kind in ("map", "object"):
        if not isinstance(value, dict):
            raise refuse("map")
        return {str(k): convert(v, kind.element, f'{what}["{k}"]') for k, v in value.items()}
    raise refuse(str(kind))  # pragma: no cover - parse_type admits no other kinds


def _parse_expression(text: str, what: str) -> Any:
    """An HCL expression given as text (a list, a map, a bool...), read with python-hcl2."""
    import hcl2
    from hcl2 import SerializationOptions

    options = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    try:
        parsed: dict[str, Any] = hcl2.loads(f"value = {text}\n", serialization_options=options)
    except Exception as exc:  # the parser's own errors carry the position
        raise VariableError(f"{what}: {text!r} is not a valid HCL expression: {exc}") from None
    value = parsed.get("value")
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        raise VariableError(f"{what}: {text!r} is not a literal value (expressions are not evaluated here)")
    return value


def declarations(data: dict[str, Any], where: str) -> dict[str, Variable]:
    """The ``variable`` blocks of a parsed job file."""
    declared: dict[str, Variable] = {}
    for entry in data.get("variable") or []:
        for name, raw in entry.items():
            body = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
            block = f'{where}: variable "{name}"'
            if not re.fullmatch(_NAME, name):
                raise VariableError(f"{block}: a name starts with a letter or _ and has letters, digits, _ or -")
            if name in declared:
                raise VariableError(f"{block} is declared twice")
            if not isinstance(body, dict):
                raise VariableError(f"{block}: expected a block")
            unknown = sorted(set(body) - {"type", "default", "description", "validation"})
            if unknown:
                raise VariableError(f"{block}: unknown attribute {unknown[0]!r}; allowed: type, default, description")
            kind = parse_type(str(body["type"]), block) if "type" in body else None
            variable = Variable(name, kind, str(body.get("description", "")))
            if "default" in body:
                variable.value = convert(body["default"], kind, f"{block} default")
                variable.type = kind or _infer(body["default"])
                variable.source, variable.has_value = "default", True
            declared[name] = variable
    return declared


def _from_text(variable: Variable, text: str, what: str) -> Any:
    value: Any = text if variable.type is None or variable.type.literal else _parse_expression(text, what)
    return convert(value, variable.type, what)


def _undeclared(name: str, how: str) -> VariableError:
    return VariableError(
        f'undefined variable: "{name}" was {how} but the job file declares no such variable; '
        f'to declare it, add variable "{name}" {{ type = string }} to the job file'
    )


def _read_var_file(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise VariableError(f"{path}: a JSON var file holds one object of NAME: VALUE")
        return loaded
    from nomad_rkt_driver.cli.hclfile import load_hcl

    values = load_hcl(path)
    if "variable" in values:
        names = [n for entry in values["variable"] for n in entry]
        raise VariableError(
            f"{path}: a var file sets values of variables the job declares, it does not declare them; "
            f"write {names[0]} = <value> instead of a variable block"
        )
    return values


def collect(declared: dict[str, Variable], inputs: VarInputs, where: str) -> dict[str, Any]:
    """Every variable's value by Nomad's precedence; VariableError names what is wrong and how to fix it."""
    env = os.environ if inputs.env is None else inputs.env
    for key, text in sorted(env.items()):
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :] in declared:
            variable = declared[key[len(ENV_PREFIX) :]]
            variable.value = _from_text(variable, text, f"{key} (environment)")
            variable.source, variable.has_value = "env", True
    for path in inputs.files:
        try:
            values = _read_var_file(path)
        except OSError as exc:
            raise VariableError(f"-var-file {path}: {exc.strerror or exc}") from None
        except VariableError:
            raise
        except Exception as exc:  # the HCL/JSON parser's own errors carry the line
            raise VariableError(f"-var-file {path}: cannot parse: {exc}") from None
        for name, value in values.items():
            if name not in declared:
                raise _undeclared(name, f"set in {path}")
            variable = declared[name]
            variable.value = convert(value, variable.type, f"{path}: {name}")
            variable.source, variable.has_value = f"file {path}", True
    for arg in inputs.args:
        name, sep, text = arg.partition("=")
        name = name.strip()
        if not sep or not name:
            raise VariableError(f"-var {arg!r}: expected NAME=VALUE, e.g. -var 'registry=127.0.0.1:5000'")
        if name not in declared:
            raise _undeclared(name, "passed with -var")
        variable = declared[name]
        variable.value = _from_text(variable, text, f"-var {name}")
        variable.source, variable.has_value = "-var", True
    unset = [v for v in declared.values() if not v.has_value]
    if unset:
        v = unset[0]
        about = f" ({v.description})" if v.description else ""
        raise VariableError(
            f"{where}: variable \"{v.name}\"{about} has no value and no default; pass -var '{v.name}=VALUE', "
            f"set it in a -var-file, or export {ENV_PREFIX}{v.name}"
        )
    return {name: v.value for name, v in declared.items()}


# -- references -------------------------------------------------------------------------------


def _closing(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` whose body starts at ``start`` (-1 when unclosed)."""
    depth, i, quoted = 0, start, False
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\":
                i += 1
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


def _follow(values: dict[str, Any], expr: str, where: str) -> Any:
    match = _REFERENCE.match(expr)
    assert match is not None
    name, steps = match.group(1), match.group(2)
    if name not in values:
        raise VariableError(
            f'{where}: reference to undeclared input variable "{name}"; declare it with variable "{name}" {{ }}'
        )
    value = values[name]
    walked = f"var.{name}"
    for step in _STEP.finditer(steps):
        key: Any = step.group(2) if step.group(2) is not None else step.group(1)
        if isinstance(key, str) and key.startswith('"'):
            key = json.loads(key)
        elif isinstance(key, str) and step.group(2) is None:
            key = int(key)
        try:
            by_index = isinstance(value, list) and isinstance(key, int)
            if by_index or (isinstance(value, dict) and isinstance(key, str)):
                value = value[key]
            else:
                raise KeyError(key)
        except (KeyError, IndexError):
            raise VariableError(f"{where}: {walked} has no element {json.dumps(key)}") from None
        walked += f"[{json.dumps(key)}]"
    return value


def _text_of(value: Any, expr: str, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_text(value)
    if isinstance(value, str):
        return value
    raise VariableError(f"{where}: ${{{expr}}} is a {type(value).__name__} and cannot be part of a string")


def _substitute(text: str, values: dict[str, Any], where: str) -> Any:
    if text.startswith("${") and _closing(text, 2) == len(text) - 1 and _REFERENCE.match(text[2:-1].strip()):
        return _follow(values, text[2:-1].strip(), where)  # the whole string: the value keeps its type
    pieces: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            pieces.append("${")  # HCL's escape: the literal text, left for runtime interpolation
            i += 3
            continue
        if not text.startswith("${", i):
            pieces.append(text[i])
            i += 1
            continue
        end = _closing(text, i + 2)
        if end < 0:
            pieces.append(text[i:])
            break
        expr = text[i + 2 : end].strip()
        if _REFERENCE.match(expr):
            pieces.append(_text_of(_follow(values, expr, where), expr, where))
        elif _USES_VAR.search(expr):
            raise VariableError(
                f"{where}: ${{{expr}}} is not supported by nomad-rkt-driver: only plain references "
                '(var.NAME, var.NAME[0], var.NAME["key"], var.NAME.attr) are evaluated, not functions or operators'
            )
        else:
            pieces.append(text[i : end + 1])
        i = end + 1
    return "".join(pieces)


def substitute(value: Any, values: dict[str, Any], where: str, at: str = "") -> Any:
    """``value`` with every variable reference replaced (recursively in lists and maps).

    ``at`` is the dotted path of ``value`` in the file, for messages (block bodies python-hcl2 wraps
    in one-element lists add no index).
    """
    if isinstance(value, str):
        return _substitute(value, values, f"{where}: {at or 'value'}") if "${" in value else value
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], dict):
            return [substitute(value[0], values, where, at)]
        return [substitute(v, values, where, f"{at}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: substitute(v, values, where, f"{at}.{k}" if at else str(k)) for k, v in value.items()}
    return value


def apply(data: dict[str, Any], where: str, inputs: VarInputs | None = None) -> dict[str, Any]:
    """The parsed job file with its variables evaluated and their declarations removed."""
    if "locals" in data:
        raise VariableError(f"{where}: locals blocks are not supported by nomad-rkt-driver; use variable blocks")
    declared = declarations(data, where)
    values = collect(declared, inputs or VarInputs(), where)
    rest = {k: v for k, v in data.items() if k != "variable"}
    resolved: dict[str, Any] = substitute(rest, values, where)
    return resolved
