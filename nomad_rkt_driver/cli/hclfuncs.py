"""Values and functions of the runner's HCL evaluator (:mod:`nomad_rkt_driver.cli.hclexpr`):
HCL's conversions and equality, and the functions Nomad's HCL has that job files use in
conditions and locals. ``regex``/``regexall`` run on Python's ``re``; patterns whose meaning
would differ from Go's RE2 are refused rather than silently matched differently.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final


class HclError(ValueError):
    """An expression cannot be evaluated; ``source`` is the ``${...}`` it is in, when known."""

    source: str = ""


class ExprError(HclError):
    """An expression is wrong for its values (a missing key, a type mismatch); ``can()`` catches these."""


class Unsupported(HclError):
    """An expression uses a construct this evaluator does not implement; never caught by ``can()``."""


# -- values ---------------------------------------------------------------------------------------


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "map"


def number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)


def to_string(value: Any, what: str = "the value") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, str):
        return value
    raise ExprError(f"{what} is a {describe(value)} and cannot be used as a string")


def to_number(value: Any, what: str = "the value") -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return tidy(float(value.strip()))
        except ValueError:
            pass
    raise ExprError(f"{what} is {json.dumps(value)}, a {describe(value)}; a number is required")


def to_bool(value: Any, what: str = "the value") -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise ExprError(f"{what} is {json.dumps(value)}, a {describe(value)}; a bool is required")


def tidy(number: float | int) -> int | float:
    if isinstance(number, float) and number.is_integer() and abs(number) < 2**53:
        return int(number)
    return number


def equal(left: Any, right: Any) -> bool:
    """HCL's ``==``: values of different types are never equal (1 != "1", true != 1)."""
    if describe(left) != describe(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(equal(left[k], right[k]) for k in left)
    return bool(left == right)


# -- functions ------------------------------------------------------------------------------------

_RE2_REFUSED: Final = (
    (re.compile(r"\(\?<?[=!]"), "lookaround assertions"),
    (re.compile(r"\\[1-9]"), "backreferences"),
    (re.compile(r"\[\[:"), "POSIX classes like [[:alpha:]] (write [a-zA-Z])"),
    (re.compile(r"\\[pP]"), "Unicode classes \\p{...}"),
    (re.compile(r"\(\?[a-zA-Z]*U"), "the U (ungreedy) flag"),
)


def _regex(pattern: Any) -> re.Pattern[str]:
    text = to_string(pattern, "the pattern")
    for check, what in _RE2_REFUSED:
        if check.search(text):
            raise Unsupported(f"regex pattern {text!r}: {what} are not supported (Go RE2 semantics)")
    text = re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", text)  # RE2's end of text
    try:
        return re.compile(text)
    except re.error as exc:
        raise ExprError(f"regex pattern {text!r} is invalid: {exc}") from None


def _match_value(match: re.Match[str]) -> Any:
    if match.re.groupindex:
        return {name: match.group(name) for name in match.re.groupindex}
    if match.re.groups:
        return list(match.groups())
    return match.group()


def _fn_regex(pattern: Any, string: Any) -> Any:
    match = _regex(pattern).search(to_string(string, "the string"))
    if match is None:
        raise ExprError(f"regex: pattern {pattern!r} does not match {string!r}")
    return _match_value(match)


def _fn_regexall(pattern: Any, string: Any) -> Any:
    return [_match_value(m) for m in _regex(pattern).finditer(to_string(string, "the string"))]


def _fn_length(value: Any) -> int:
    if isinstance(value, str | list | dict):
        return len(value)
    raise ExprError(f"length() of a {describe(value)}: a string, list or map is required")


def _list(value: Any, fn: str) -> list[Any]:
    if not isinstance(value, list):
        raise ExprError(f"{fn}() needs a list, got a {describe(value)}")
    return value


def _fn_contains(collection: Any, value: Any) -> bool:
    return any(equal(item, value) for item in _list(collection, "contains"))


def _fn_concat(*lists: Any) -> list[Any]:
    return [item for each in lists for item in _list(each, "concat")]


def _fn_join(separator: Any, items: Any) -> str:
    return to_string(separator, "the separator").join(to_string(i, "a joined item") for i in _list(items, "join"))


def _fn_split(separator: Any, string: Any) -> list[str]:
    sep, text = to_string(separator, "the separator"), to_string(string, "the string")
    return list(text) if sep == "" else text.split(sep)


def _fn_tonumber(value: Any) -> int | float | None:
    return None if value is None else to_number(value, "tonumber()'s argument")


def _fn_tostring(value: Any) -> str | None:
    return None if value is None else to_string(value, "tostring()'s argument")


_VERB: Final = re.compile(r"%(?P<flags>[-+ 0#]*)(?P<width>\d*)(?:\.(?P<precision>\d+))?(?P<verb>.?)")


def _fn_format(spec: Any, *args: Any) -> str:
    """Go-style verbs: %s %d %f %v %q %t %x %% with flags, width and precision (no %[n] indexes)."""
    text, out, used, i = to_string(spec, "the format"), [], 0, 0
    while i < len(text):
        if text[i] != "%":
            out.append(text[i])
            i += 1
            continue
        match = _VERB.match(text, i)
        assert match is not None
        verb, i = match.group("verb"), match.end()
        if verb == "%":
            out.append("%")
            continue
        if verb not in ("s", "d", "f", "v", "q", "t", "x"):
            raise Unsupported(f"format verb %{verb} (supported: %s %d %f %v %q %t %x %%)")
        if used >= len(args):
            raise ExprError(f"format {text!r}: not enough arguments")
        arg, used = args[used], used + 1
        head = f"%{match.group('flags')}{match.group('width')}"
        precision = f".{match.group('precision')}" if match.group("precision") else ""
        if verb == "d" or verb == "x":
            number = to_number(arg, f"the argument of %{verb}")
            if number != int(number):
                raise ExprError(f"format: %{verb} needs a whole number, got {number_text(number)}")
            out.append((head + verb) % int(number))
        elif verb == "f":
            out.append((head + (precision or ".6") + "f") % to_number(arg, "the argument of %f"))
        elif verb == "t":
            out.append((head + "s") % to_string(to_bool(arg, "the argument of %t")))
        elif verb == "q":
            out.append((head + "s") % json.dumps(to_string(arg, "the argument of %q"), ensure_ascii=False))
        elif verb == "v" and not isinstance(arg, str | int | float | bool):
            out.append((head + "s") % json.dumps(arg, separators=(",", ":")))
        else:
            out.append((head + precision + "s") % to_string(arg, f"the argument of %{verb}"))
    if used < len(args):
        raise ExprError(f"format {text!r}: too many arguments ({len(args)} given, {used} used)")
    return "".join(out)


def _text_fn(fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda value: fn(to_string(value, "the argument"))


def _pair_fn(fn: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    return lambda a, b: fn(to_string(a, "the string"), to_string(b, "the prefix/suffix"))


FUNCTIONS: Final[Mapping[str, tuple[Callable[..., Any], int, int]]] = {
    # name: (implementation, least arguments, most arguments (-1: any))
    "length": (_fn_length, 1, 1),
    "contains": (_fn_contains, 2, 2),
    "regex": (_fn_regex, 2, 2),
    "regexall": (_fn_regexall, 2, 2),
    "lower": (_text_fn(str.lower), 1, 1),
    "upper": (_text_fn(str.upper), 1, 1),
    "trimspace": (_text_fn(str.strip), 1, 1),
    "startswith": (_pair_fn(str.startswith), 2, 2),
    "endswith": (_pair_fn(str.endswith), 2, 2),
    "tonumber": (_fn_tonumber, 1, 1),
    "tostring": (_fn_tostring, 1, 1),
    "concat": (_fn_concat, 1, -1),
    "join": (_fn_join, 2, 2),
    "split": (_fn_split, 2, 2),
    "format": (_fn_format, 1, -1),
}
