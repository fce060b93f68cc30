"""HCL2 input variables in job files, as ``nomad job run`` takes them.

``variable "name" { type, default, description }`` blocks declare them; values come, later ones
winning, from the default, ``NOMAD_VAR_<name>`` in the environment, each ``-var-file`` in order
and each ``-var NAME=VALUE`` in order. References (``var.name``, ``"${var.name}"``, with ``[0]``,
``["key"]`` or ``.attr`` after them) are replaced before the job is read: a string that is only
one reference takes the variable's own type (a list stays a list), one inside a longer string
is spliced in as text. ``$${`` is HCL's escape for a literal ``${``.

Expressions (``${var.port + 1}``, ``${upper(var.name)}``, ``c ? a : b``...) are evaluated by
:mod:`nomad_rkt_driver.cli.hclexpr`, the one evaluator for job bodies, ``locals { }`` values and
``validation { condition }`` rules; a construct it does not implement is refused naming it.
``${...}`` without ``var.``/``local.`` (``NOMAD_*``, ``attr.*``) is left for the runtime
interpolation, as Nomad leaves it for the client. ``validation`` rules are checked once every
value is known; ``locals`` are evaluated in dependency order (a cycle is an error naming it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nomad_rkt_driver.cli.hclexpr import Scope, references, render
from nomad_rkt_driver.cli.hclfuncs import ExprError, HclError, Unsupported, to_string

ENV_PREFIX: Final = "NOMAD_VAR_"
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
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
        try:
            return to_string(value)
        except ExprError:
            raise refuse("string") from None
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
                raise VariableError(
                    f"{block}: unknown attribute {unknown[0]!r}; allowed: type, default, description, validation"
                )
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


# -- expressions, locals, validation ---------------------------------------------------------


def _problem(exc: HclError, where: str) -> VariableError:
    source = f"{exc.source} " if exc.source else ""
    if isinstance(exc, Unsupported):
        return VariableError(f"{where}: {source}is not supported by nomad-rkt-driver: {exc}")
    return VariableError(f"{where}: {source.rstrip()}{': ' if source else ''}{exc}")


def substitute(value: Any, scope: Scope, where: str, at: str = "") -> Any:
    """``value`` with every expression evaluated (recursively in lists and maps).

    ``at`` is the dotted path of ``value`` in the file, for messages (block bodies python-hcl2 wraps
    in one-element lists add no index).
    """
    if isinstance(value, str):
        if "${" not in value and "%{" not in value:
            return value
        try:
            return render(value, scope)
        except HclError as exc:
            raise _problem(exc, f"{where}: {at or 'value'}") from None
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], dict):
            return [substitute(value[0], scope, where, at)]
        return [substitute(v, scope, where, f"{at}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: substitute(v, scope, where, f"{at}.{k}" if at else str(k)) for k, v in value.items()}
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _locals_used(value: Any, where: str) -> set[str]:
    used: set[str] = set()
    for text in _strings(value):
        if "${" in text:
            try:
                used |= {name for scope, name in references(text) if scope == "local"}
            except HclError as exc:
                raise _problem(exc, where) from None
    return used


def evaluate_locals(data: dict[str, Any], variables: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Every ``locals { }`` value, each evaluated after the locals it uses; a cycle is an error naming it."""
    bodies: dict[str, Any] = {}
    for block in data.get("locals") or []:
        if not isinstance(block, dict):
            raise VariableError(f"{where}: locals: expected a block of NAME = EXPRESSION")
        for name, value in block.items():
            if name in bodies:
                raise VariableError(f'{where}: local value "{name}" is defined twice (locals are one namespace)')
            bodies[name] = value
    uses = {name: _locals_used(value, f"{where}: local.{name}") for name, value in bodies.items()}
    values: dict[str, Any] = {}
    scope = Scope(variables, values)
    state: dict[str, str] = {}  # "busy" while its dependencies are evaluated, then "done"

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "busy":
            cycle = [*chain[chain.index(name) :], name]
            raise VariableError(
                f"{where}: locals refer to each other in a cycle: {' -> '.join(f'local.{n}' for n in cycle)}; "
                "break it by computing one of them from variables only"
            )
        state[name] = "busy"
        for used in sorted(uses[name]):
            if used not in bodies:
                raise VariableError(
                    f'{where}: local.{name}: reference to undeclared local value "{used}"; '
                    f"declare it in a locals {{ }} block"
                )
            visit(used, [*chain, name])
        values[name] = substitute(bodies[name], scope, where, f"local.{name}")
        state[name] = "done"

    for name in bodies:
        visit(name, [])
    return values


def _source_text(variable: Variable) -> str:
    source = variable.source
    if source == "env":
        return f"{ENV_PREFIX}{variable.name} in the environment"
    if source.startswith("file "):
        return f"-var-file {source[5:]}"
    return "the default" if source == "default" else source


def validate(declared: Mapping[str, Variable], rules: Mapping[str, list[Any]], where: str) -> None:
    """Each ``validation { condition, error_message }`` of each variable; the first failure is an error."""
    scope = Scope({name: v.value for name, v in declared.items()})
    for name, blocks in rules.items():
        variable = declared[name]
        for number, rule in enumerate(blocks, 1):
            block = f'{where}: variable "{name}" validation'
            if not isinstance(rule, dict) or set(rule) != {"condition", "error_message"}:
                found = sorted(rule) if isinstance(rule, dict) else rule
                raise VariableError(f"{block}: expected exactly condition and error_message, found {found}")
            outcome = substitute(rule["condition"], scope, block, "condition")
            if outcome not in (True, False, "true", "false"):
                raise VariableError(
                    f"{block}: condition must be true or false, it is {json.dumps(outcome)}; "
                    "write a comparison such as var.x > 0"
                )
            if outcome in (True, "true"):
                continue
            message = substitute(rule["error_message"], scope, block, "error_message")
            condition = str(rule["condition"])
            if condition.startswith("${") and condition.endswith("}"):
                condition = condition[2:-1]
            raise VariableError(
                f"{where}: Invalid value for variable: {message}\n"
                f'  variable "{name}" = {json.dumps(variable.value)} (from {_source_text(variable)}) '
                f"fails validation rule {number}: {condition}"
            )


def apply(data: dict[str, Any], where: str, inputs: VarInputs | None = None) -> dict[str, Any]:
    """The parsed job file with its variables validated, its locals and expressions evaluated, and
    the ``variable``/``locals`` blocks removed."""
    declared = declarations(data, where)
    values = collect(declared, inputs or VarInputs(), where)
    rules = {
        name: body.get("validation") or []
        for entry in data.get("variable") or []
        for name, raw in entry.items()
        for body in [raw[0] if isinstance(raw, list) and len(raw) == 1 else raw]
        if isinstance(body, dict)
    }
    validate(declared, {name: blocks for name, blocks in rules.items() if blocks}, where)
    local_values = evaluate_locals(data, values, where)
    rest = {k: v for k, v in data.items() if k not in ("variable", "locals")}
    resolved: dict[str, Any] = substitute(rest, Scope(values, local_values), where)
    return resolved
