"""A small, safe evaluator for the HCL2 expressions job files use in variables and locals.

python-hcl2 hands every expression back as text (``"${var.port > 1024}"``; literal parts of a
quoted string already unescaped, string literals inside ``${...}`` still in source form). This
module parses that text itself (no Python ``eval``) and evaluates the subset Nomad users write:
literals (numbers, strings with ``${...}`` templates, ``true``/``false``/``null``, ``[...]``,
``{...}``), ``var.x``/``local.x`` references with ``[i]``, ``["key"]`` and ``.attr`` after them,
the operators ``! - * / % + < <= > >= == != && || ?:`` with HCL's precedence, parentheses, and the
functions in :data:`hclfuncs.FUNCTIONS`. Anything else (``for`` expressions, splats, ``%{`` directives,
other functions) raises :class:`Unsupported` naming the construct.

A root other than ``var``/``local`` (``NOMAD_TASK_NAME``, ``attr.kernel.name``, ``meta.x``,
``env["X"]``) is a runtime variable: :func:`render` leaves an interpolation made only of those for
the runtime interpolation, as Nomad leaves it for the client.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from nomad_rkt_driver.cli.hclfuncs import (
    FUNCTIONS,
    ExprError,
    HclError,
    Unsupported,
    describe,
    equal,
    number_text,
    tidy,
    to_bool,
    to_number,
    to_string,
)

SCOPES: Final = ("var", "local")
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER: Final = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_OPS: Final = ("==", "!=", "<=", ">=", "&&", "||", "...", "=>", "[*]", ".*")
_SINGLE: Final = "+-*/%<>!?:()[]{},.="


# -- syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Root:
    """``var``, ``local`` or a runtime name (``NOMAD_TASK_NAME``, ``attr``...)."""

    name: str


@dataclass(frozen=True)
class Step:
    """``base[key]`` or ``base.attr`` (key a Literal then)."""

    base: Any
    key: Any


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Any


@dataclass(frozen=True)
class Binary:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Conditional:
    condition: Any
    then: Any
    other: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Tuple:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Object:
    pairs: tuple[tuple[Any, Any], ...]


@dataclass(frozen=True)
class Interp:
    expr: Any
    source: str  # the ``${...}`` text, for messages and to leave runtime interpolations as written


@dataclass(frozen=True)
class Template:
    parts: tuple[str | Interp, ...] = field(default=())


# -- parser ---------------------------------------------------------------------------------------

_UNESCAPE: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class _Parser:
    def __init__(self, text: str, pos: int = 0) -> None:
        self.text = text
        self.pos = pos

    # tokens are lexed at self.pos on demand: ("num"|"str"|"name"|"op"|"end", value, start)
    def _skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def peek(self) -> tuple[str, Any]:
        self._skip_space()
        text, i = self.text, self.pos
        if i >= len(text):
            return ("end", None)
        char = text[i]
        if char == '"':
            return ("str", None)
        if char.isdigit():
            match = _NUMBER.match(text, i)
            assert match is not None
            return ("num", match.group())
        name = _IDENT.match(text, i)
        if name:
            return ("name", name.group())
        if text.startswith("<<", i):
            raise Unsupported("heredoc strings inside an expression")
        for op in _OPS:
            if text.startswith(op, i):
                return ("op", op)
        if char in _SINGLE:
            return ("op", char)
        raise Unsupported(f"the character {char!r} at {text[i : i + 20]!r}")

    def take(self) -> tuple[str, Any]:
        kind, value = self.peek()
        if kind == "str":
            return kind, self.string()
        if kind != "end":
            self.pos += len(value)
        return kind, value

    def accept(self, op: str) -> bool:
        if self.peek() == ("op", op):
            self.pos += len(op)
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            kind, value = self.peek()
            found = "the end of the expression" if kind == "end" else repr(value if kind != "str" else '"')
            raise ExprError(f"expected {op!r}, found {found}")

    def string(self) -> Template:
        """A quoted string literal in source form, starting at its opening quote."""
        self.pos += 1
        template, self.pos = parse_template(self.text, self.pos, quoted=True)
        return template

    # expression grammar, lowest precedence first
    def expression(self) -> Any:
        condition = self.binary(0)
        if self.accept("?"):
            then = self.expression()
            self.expect(":")
            return Conditional(condition, then, self.expression())
        return condition

    _LEVELS: Final = (("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Any:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            kind, value = self.peek()
            if kind != "op" or value not in self._LEVELS[level]:
                return left
            self.pos += len(value)
            left = Binary(value, left, self.binary(level + 1))

    def unary(self) -> Any:
        for op in ("!", "-"):
            if self.peek() == ("op", op):
                self.pos += 1
                return Unary(op, self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Any) -> Any:
        while True:
            kind, value = self.peek()
            if kind == "op" and value in ("[*]", ".*"):
                raise Unsupported(f"splat expressions ({value})")
            if self.accept("["):
                key = self.expression()
                self.expect("]")
                node = Step(node, key)
            elif kind == "op" and value == ".":
                self.pos += 1
                kind, name = self.take()
                if kind == "num" and name.isdigit():
                    node = Step(node, Literal(int(name)))
                elif kind == "name":
                    node = Step(node, Literal(name))
                else:
                    raise ExprError("expected an attribute name after '.'")
            else:
                return node

    def primary(self) -> Any:
        kind, value = self.take()
        if kind == "num":
            number = float(value)
            return Literal(int(value) if re.fullmatch(r"\d+", value) else number)
        if kind == "str":
            return value
        if kind == "name":
            if value in ("true", "false"):
                return Literal(value == "true")
            if value == "null":
                return Literal(None)
            if value in ("for",):
                raise Unsupported("for expressions")
            if self.accept("("):
                return self.call(value)
            return Root(value)
        if (kind, value) == ("op", "("):
            inner = self.expression()
            self.expect(")")
            return inner
        if (kind, value) == ("op", "["):
            return self.tuple()
        if (kind, value) == ("op", "{"):
            return self.object()
        if kind == "end":
            raise ExprError("the expression ends where a value was expected")
        raise ExprError(f"unexpected {value!r} where a value was expected")

    def call(self, name: str) -> Call:
        args: list[Any] = []
        while not self.accept(")"):
            args.append(self.expression())
            if self.accept("..."):
                raise Unsupported(f"argument expansion (...) in {name}()")
            if not self.accept(","):
                self.expect(")")
                break
        return Call(name, tuple(args))

    def tuple(self) -> Tuple:
        if self.peek() == ("name", "for"):
            raise Unsupported("for expressions")
        items: list[Any] = []
        while not self.accept("]"):
            items.append(self.expression())
            if not self.accept(","):
                self.expect("]")
                break
        return Tuple(tuple(items))

    def object(self) -> Object:
        if self.peek() == ("name", "for"):
            raise Unsupported("for expressions")
        pairs: list[tuple[Any, Any]] = []
        while not self.accept("}"):
            kind, value = self.peek()
            if kind == "name" and value not in ("true", "false", "null"):
                self.pos += len(value)
                key: Any = Literal(value)
            else:
                key = self.expression()
            if not (self.accept("=") or self.accept(":")):
                raise ExprError("expected '=' or ':' after an object key")
            pairs.append((key, self.expression()))
            self.accept(",")
        return Object(tuple(pairs))


_SCOPED: Final = re.compile(r"(?<![\w.])(?:var|local)\.")


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


def parse_template(text: str, pos: int = 0, *, quoted: bool = False) -> tuple[Template, int]:
    """The template starting at ``pos``: to the closing quote (``quoted``: HCL escapes apply) or
    to the end of ``text`` (a python-hcl2 string value, its escapes already processed).

    Returns the template and the position after it (after the closing quote)."""
    parts: list[str | Interp] = []
    literal: list[str] = []
    i = pos
    while i < len(text):
        char = text[i]
        if quoted and char == '"':
            break
        if quoted and char == "\\":
            escape = text[i + 1 : i + 2]
            if escape in _UNESCAPE:
                literal.append(_UNESCAPE[escape])
                i += 2
            elif escape in ("u", "U"):
                width = 4 if escape == "u" else 8
                digits = text[i + 2 : i + 2 + width]
                if not re.fullmatch(rf"[0-9A-Fa-f]{{{width}}}", digits):
                    raise ExprError(f"bad escape \\{escape}{digits} in a string")
                literal.append(chr(int(digits, 16)))
                i += 2 + width
            else:
                raise ExprError(f"unknown escape \\{escape} in a string")
            continue
        if text.startswith("$${", i) or text.startswith("%%{", i):
            literal.append(text[i] + "{")
            i += 3
            continue
        if text.startswith("%{", i):
            raise Unsupported("template directives (%{ if }, %{ for }); use the conditional c ? a : b")
        if text.startswith("${", i):
            if literal:
                parts.append("".join(literal))
                literal = []
            parser = _Parser(text, i + 2)
            try:
                expr = parser.expression()
                parser.expect("}")
            except HclError as exc:
                end = _closing(text, i + 2)
                source = text[i : end + 1] if end >= 0 else text[i:]
                if quoted or _SCOPED.search(source):
                    exc.source = exc.source or source
                    raise
                literal.append(source)  # not ours to evaluate: left for the runtime interpolation
                i += len(source)
                continue
            parts.append(Interp(expr, text[i : parser.pos]))
            i = parser.pos
            continue
        literal.append(char)
        i += 1
    else:
        if quoted:
            raise ExprError("a string is not closed (missing '\"')")
    if literal:
        parts.append("".join(literal))
    return Template(tuple(parts)), i + 1 if quoted else i


def parse(source: str) -> Any:
    """One expression in HCL source form (``var.port > 1024``)."""
    parser = _Parser(source)
    expr = parser.expression()
    kind, value = parser.peek()
    if kind != "end":
        raise ExprError(f"unexpected {value!r} after the expression")
    return expr


def roots(node: Any) -> set[tuple[str, str]]:
    """The references in ``node``: ("var", name), ("local", name) or (runtime root, "")."""
    found: set[tuple[str, str]] = set()

    def walk(item: Any) -> None:
        if isinstance(item, Step) and isinstance(item.base, Root) and item.base.name in SCOPES:
            if isinstance(item.key, Literal) and isinstance(item.key.value, str):
                found.add((item.base.name, item.key.value))
            else:
                walk(item.key)
            return
        if isinstance(item, Root):
            found.add((item.name, ""))
        elif isinstance(item, Step):
            walk(item.base)
            walk(item.key)
        elif isinstance(item, Unary):
            walk(item.operand)
        elif isinstance(item, Binary):
            walk(item.left)
            walk(item.right)
        elif isinstance(item, Conditional):
            walk(item.condition)
            walk(item.then)
            walk(item.other)
        elif isinstance(item, Call | Tuple):
            for arg in item.args if isinstance(item, Call) else item.items:
                walk(arg)
        elif isinstance(item, Object):
            for key, value in item.pairs:
                walk(key)
                walk(value)
        elif isinstance(item, Template):
            for part in item.parts:
                if isinstance(part, Interp):
                    walk(part.expr)

    walk(node)
    return found


# -- evaluation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What ``var.x`` and ``local.x`` name."""

    variables: Mapping[str, Any]
    locals: Mapping[str, Any] = field(default_factory=dict)


def _path(node: Any) -> str:
    if isinstance(node, Root):
        return node.name
    if isinstance(node, Step) and isinstance(node.key, Literal):
        base = _path(node.base)
        key = node.key.value
        if isinstance(key, str) and _IDENT.fullmatch(key) and not base.endswith("]"):
            return f"{base}.{key}"
        return f"{base}[{json.dumps(key)}]"
    return "the value"


def _step(node: Step, scope: Scope) -> Any:
    if isinstance(node.base, Root) and node.base.name in SCOPES:
        table = scope.variables if node.base.name == "var" else scope.locals
        name = evaluate(node.key, scope)
        if name not in table:
            if node.base.name == "var":
                raise ExprError(
                    f'reference to undeclared input variable "{name}"; declare it with variable "{name}" {{ }}'
                )
            raise ExprError(f'reference to undeclared local value "{name}"; declare it in a locals {{ }} block')
        return table[name]
    if isinstance(node.base, Root):
        raise ExprError(f"{node.base.name} is not known here (only var.* and local.*)")
    value = evaluate(node.base, scope)
    key = evaluate(node.key, scope)
    walked = _path(node.base)
    if isinstance(value, list) and not isinstance(key, bool):
        try:
            index = to_number(key, "a list index")
        except ExprError:
            index = -1
        if index == int(index) and 0 <= index < len(value):
            return value[int(index)]
    elif isinstance(value, dict) and isinstance(key, str | int | float) and not isinstance(key, bool):
        text = to_string(key)
        if text in value:
            return value[text]
    elif value is None:
        raise ExprError(f"{walked} is null and has no element {json.dumps(key)}")
    raise ExprError(f"{walked} has no element {json.dumps(key)}")


def _arithmetic(op: str, left: Any, right: Any) -> Any:
    a, b = to_number(left, f"the left operand of {op}"), to_number(right, f"the right operand of {op}")
    if op == "+":
        return tidy(a + b)
    if op == "-":
        return tidy(a - b)
    if op == "*":
        return tidy(a * b)
    if b == 0:
        raise ExprError(f"division by zero ({number_text(a)} {op} 0)")
    if op == "/":
        return tidy(a / b)
    return tidy(math.fmod(a, b))  # % keeps the dividend's sign, as Go's math.Mod


def _binary(node: Binary, scope: Scope) -> Any:
    op = node.op
    if op in ("&&", "||"):
        left = to_bool(evaluate(node.left, scope), f"the left operand of {op}")
        if left == (op == "||"):
            return left  # the left side decides: the right one is not evaluated
        return to_bool(evaluate(node.right, scope), f"the right operand of {op}")
    left, right = evaluate(node.left, scope), evaluate(node.right, scope)
    if op == "==":
        return equal(left, right)
    if op == "!=":
        return not equal(left, right)
    if op in ("<", "<=", ">", ">="):
        a, b = to_number(left, f"the left operand of {op}"), to_number(right, f"the right operand of {op}")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    return _arithmetic(op, left, right)


def _call(node: Call, scope: Scope) -> Any:
    if node.name == "can":
        if len(node.args) != 1:
            raise ExprError("can() takes 1 argument")
        try:
            evaluate(node.args[0], scope)
        except ExprError:
            return False
        return True
    if node.name not in FUNCTIONS:
        known = ", ".join(sorted([*FUNCTIONS, "can"]))
        raise Unsupported(f"the function {node.name}() (supported: {known})")
    fn, least, most = FUNCTIONS[node.name]
    if len(node.args) < least or (most >= 0 and len(node.args) > most):
        wanted = str(least) if least == most else f"at least {least}"
        raise ExprError(f"{node.name}() takes {wanted} argument{'s' if wanted != '1' else ''}, got {len(node.args)}")
    args = [evaluate(arg, scope) for arg in node.args]
    return fn(*args)


def evaluate(node: Any, scope: Scope) -> Any:
    """The value of a parsed expression; ExprError or Unsupported when it has none."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Step):
        return _step(node, scope)
    if isinstance(node, Root):
        if node.name in SCOPES:
            raise ExprError(f"{node.name} alone is not a value; write {node.name}.NAME")
        raise ExprError(f"{node.name} is not known here (only var.* and local.*)")
    if isinstance(node, Unary):
        value = evaluate(node.operand, scope)
        if node.op == "!":
            return not to_bool(value, "the operand of !")
        return tidy(-to_number(value, "the operand of -"))
    if isinstance(node, Binary):
        return _binary(node, scope)
    if isinstance(node, Conditional):
        chosen = to_bool(evaluate(node.condition, scope), "the condition of ? :")
        return evaluate(node.then if chosen else node.other, scope)
    if isinstance(node, Call):
        return _call(node, scope)
    if isinstance(node, Tuple):
        return [evaluate(item, scope) for item in node.items]
    if isinstance(node, Object):
        return {to_string(evaluate(k, scope), "an object key"): evaluate(v, scope) for k, v in node.pairs}
    if isinstance(node, Template):
        return _template(node, scope, keep_runtime=False)
    raise AssertionError(f"unknown node {node!r}")  # pragma: no cover


def _runtime_only(expr: Any) -> bool:
    found = roots(expr)
    return bool(found) and not any(scope in SCOPES for scope, _ in found)


def _template(template: Template, scope: Scope, *, keep_runtime: bool) -> Any:
    parts = template.parts
    if len(parts) == 1 and isinstance(parts[0], Interp):
        if keep_runtime and _runtime_only(parts[0].expr):
            return parts[0].source
        return _interpolate(parts[0], scope)  # a lone interpolation keeps its value's type
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
        elif keep_runtime and _runtime_only(part.expr):
            pieces.append(part.source)
        else:
            value = _interpolate(part, scope)
            if isinstance(value, list | dict) or value is None:
                problem = ExprError(
                    f'a {describe(value)} cannot be part of a string (join(",", ...) makes one of a list)'
                )
                problem.source = part.source
                raise problem
            pieces.append(to_string(value))
    return "".join(pieces)


def _interpolate(part: Interp, scope: Scope) -> Any:
    try:
        return evaluate(part.expr, scope)
    except HclError as exc:
        exc.source = exc.source or part.source
        raise


def render(text: str, scope: Scope) -> Any:
    """A string value from python-hcl2 (a template) evaluated: a lone ``${expr}`` keeps its type;
    interpolations of runtime variables only (``${NOMAD_TASK_NAME}``) are kept as written."""
    template, _end = parse_template(text)
    return _template(template, scope, keep_runtime=True)


def references(text: str) -> set[tuple[str, str]]:
    """The ``var``/``local``/runtime roots a python-hcl2 string value refers to."""
    template, _end = parse_template(text)
    return roots(template)
