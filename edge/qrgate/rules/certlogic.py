"""CertLogic 1.3.3, the EU DCC business rules' dialect of JsonLogic: the validator and the evaluator.

Written here rather than taken from a JsonLogic library: CertLogic is a strict subset of JsonLogic with its
own validation (no ``or``, no ``var`` defaults, no null or float literals, fixed arities), stricter truthiness,
no coercion, and date-times only ``plusTime``/``dccDateOfBirth`` make. PyPI's panzi-json-logic 1.0.1 (the one
Python "CertLogic", 2021-09, before spec 1.3.0) passes 207 of the official suite's 232 assertions (no
``dccDateOfBirth``, no partial dates in ``plusTime``), has no validator, coerces as JavaScript does (``"1" + 2``
is 3.0, ``true === 1``), raises on 2020-02-29 plus one year and on deep nesting, and takes fullwidth digits as
dates: fixing that is replacing all of it, which this module and ``certlogic_dates.py`` are. Where the
specification leaves a choice, what this evaluator does, and why:

- An integer is a JSON number with an integral value (so 42.0 is 42, as in JSON and the JavaScript
  reference; bool is not a number). Others (3.5, NaN, infinity) are neither truthy nor falsy, and no
  comparison or ``+`` takes them. ``+`` refuses a sum beyond 2**53 - 1, where JavaScript would round.
- ``===`` is structural equality without coercion (equal arrays and objects are equal, date-times
  equal at the same instant); the spec calls it reliable only on strings and integers.
- ``in`` on a non-array right-hand side, ``null`` included, is an error, as the spec says it is. The
  official suite holds four assertions (``ins-with-nulls.json``, marked ``skip`` for implementations)
  expecting ``false`` there: a rule ``!(x in external.valueSets.<missing>)`` would then pass by accident.
- ``reduce``'s lambda sees ``data`` (the context the ``reduce`` is evaluated in) beside ``current`` and
  ``accumulator``: the extension the spec says CertLogic may make, as ``patched-reduce.json`` tests.
- The data is a DCC payload decoded from CBOR, so it may hold what JSON cannot: bytes, datetime, tags,
  NaN, integers of any size, maps with non-text keys. ``var`` returns such a value as it is; it is
  neither truthy nor falsy, not an integer, string or date-time, and ``===``/``in`` refuse to compare
  it: every use is an evaluation error, so a rule reading one fails instead of guessing. A datetime
  object is not a date-time string: ``plusTime`` on it is an error too.

Bounds, for a gate that must answer in time whatever it is shown: an expression nests at most
MAX_DEPTH operations and arrays (validation refuses deeper, so evaluation recursion is bounded); one
evaluation takes at most MAX_STEPS steps (one per expression node evaluated and per value compared, so
``reduce`` over a huge array or ``===`` on huge values ends in an error); data is compared at most
MAX_DEPTH levels deep. No ``eval``, no regular expression with nested repetition, and nothing but
CertLogicError leaves ``evaluate`` (``validate`` never raises).
"""

from __future__ import annotations

import itertools
import math
import operator as _op
import re
import reprlib
from collections.abc import Callable, Mapping
from typing import Any

from .certlogic_dates import TIME_UNITS, DateTime, dcc_date_of_birth, parse_date_time, plus_time

__all__ = ["MAX_DEPTH", "MAX_STEPS", "CertLogicError", "DateTime", "evaluate", "validate"]

MAX_DEPTH = 64
MAX_STEPS = 100_000  # an EU rule takes tens to a few hundred; 100,000 take 0.08 s on the dev machine, ~0.5 s on a Pi 4
MAX_SAFE_INTEGER = 2**53 - 1

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {"<": _op.lt, ">": _op.gt, "<=": _op.le, ">=": _op.ge}
_COMPARE_DATES: dict[str, Callable[[Any, Any], bool]] = {
    "before": _op.lt, "after": _op.gt, "not-after": _op.le, "not-before": _op.ge}
_EXACT_ARITY = {"if": 3, "===": 2, "in": 2, "+": 2, "!": 1, "plusTime": 3, "reduce": 3, "extractFromUVCI": 2,
                "dccDateOfBirth": 1}
_VAR_PATH = re.compile(r"[^.]+(?:\.[^.]+)*")
_INDEX = re.compile(r"[0-9]{1,18}", re.ASCII)  # longer is no index of any array, and int() of it is refused
_UVCI_PREFIX = "URN:UVCI:"
_UVCI_SEPARATORS = re.compile(r"[/#:]")

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 2, 40, 40, 4, 4


class CertLogicError(ValueError):
    """An invalid CertLogic expression, or an evaluation error (type mismatch the spec calls an error)."""


class _Failure(Exception):
    """An evaluation error on its way out, collecting the place (``and[1].plusTime[0]``) as it goes."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.place: list[str] = []  # innermost first


class _Budget:
    __slots__ = ("left",)

    def __init__(self, steps: int) -> None:
        self.left = steps

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Failure(f"evaluation takes more than {MAX_STEPS} steps")


# --- validation ----------------------------------------------------------------------------------------------

def validate(expression: object) -> list[str]:
    """Every problem that makes ``expression`` invalid CertLogic (empty: valid). Each problem is a short
    message naming the place, e.g. 'and[1]: unknown operation "foo"'. Never raises."""
    problems: list[str] = []
    try:
        _validate(expression, "", 0, problems)
    except Exception as error:  # noqa: BLE001 - a caller's exotic object must give a problem, not a crash
        problems.append(f"cannot be validated: {type(error).__name__}")
    return problems


def _validate(expr: object, place: str, depth: int, problems: list[str]) -> None:
    def problem(message: str) -> None:
        problems.append(f"{place}: {message}" if place else message)

    if isinstance(expr, (str, bool, int)):
        return
    if isinstance(expr, float):
        if _integer(expr) is None:
            problem(f"{_show(expr)} is a non-integer number")
        return
    if not isinstance(expr, (list, dict)):  # null, and anything json.loads does not make
        problem("invalid CertLogic expression")
        return
    if depth >= MAX_DEPTH:
        problem(f"nests deeper than {MAX_DEPTH} operations and arrays")
        return
    if isinstance(expr, list):
        for index, item in enumerate(expr):
            _validate(item, f"{place}[{index}]", depth + 1, problems)
        return
    if len(expr) != 1:
        problem(f"expression object must have exactly one key, but it has {len(expr)}")
        return
    ((operator, values),) = expr.items()
    if operator == "var":
        if not isinstance(values, str):
            problem('not of the form { "var": "<path>" }')
        elif values and not _VAR_PATH.fullmatch(values):
            problem(f"data access path doesn't have a valid format: {_clip(values)}")
        return
    if not isinstance(values, list):
        problem('operation not of the form { "<operator>": [ <values...> ] }')
        return
    count = len(values)
    expressions = count  # how many leading operands are expressions (plusTime's amount and unit are not)
    if operator == "and":
        if count < 2:
            problem(f'an "and" operation must have at least 2 operands, but it has {count}')
    elif operator in _COMPARE or operator in _COMPARE_DATES:
        if not 2 <= count <= 3:
            problem(f'an operation with operator "{operator}" must have 2 or 3 operands, but it has {count}')
        expressions = min(count, 3)
    elif operator in _EXACT_ARITY:
        arity = _EXACT_ARITY[operator]
        if count != arity:
            problem(f'an operation with operator "{operator}" must have exactly {arity} '
                    f'operand{"s" if arity > 1 else ""}, but it has {count}')
        expressions = 1 if operator in ("plusTime", "extractFromUVCI") else min(count, arity)
        if operator in ("plusTime", "extractFromUVCI") and count > 1 and _integer(values[1]) is None:
            name = "amount" if operator == "plusTime" else "index"
            problem(f'"{name}" argument (#2) of "{operator}" must be an integer, but it is: {_show(values[1])}')
        if operator == "plusTime" and count > 2 and not (isinstance(values[2], str) and values[2] in TIME_UNITS):
            problem(f'"unit" argument (#3) of "plusTime" must be a string equal to one of '
                    f"{', '.join(TIME_UNITS)}, but it is: {_show(values[2])}")
    else:
        problem(f'unrecognised operator: "{_clip(operator)}"' if isinstance(operator, str)
                else f"unrecognised operator: {_show(operator)}")
        return
    prefix = f"{place}.{operator}" if place else operator
    for index in range(min(expressions, count)):
        _validate(values[index], f"{prefix}[{index}]", depth + 1, problems)


# --- evaluation ----------------------------------------------------------------------------------------------

def evaluate(expression: object, data: object) -> object:
    """The value of ``expression`` (a JSON value: dict/list/str/int/float/bool/None, as json.loads gives)
    over ``data``. Raises CertLogicError for an invalid expression or an evaluation error.

    The value is a JSON value, a DateTime (for a ``plusTime``/``dccDateOfBirth`` result), or whatever
    ``var`` found in ``data``. Validation comes first, so nothing of an invalid expression is evaluated.
    """
    problems = validate(expression)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CertLogicError(f"invalid CertLogic expression: {problems[0]}{more}")
    try:
        return _eval(expression, data, _Budget(MAX_STEPS))
    except _Failure as failure:
        place = "".join(seg if seg.startswith("[") or i == 0 else f".{seg}"
                        for i, seg in enumerate(reversed(failure.place)))
        raise CertLogicError(f"{place}: {failure.message}" if place else failure.message) from None
    except Exception as error:
        raise CertLogicError(f"evaluation failed on the data: {type(error).__name__}") from error


def _eval(expr: Any, data: Any, budget: _Budget) -> Any:
    budget.spend()
    if isinstance(expr, (str, int, float)):  # bool is an int; floats left by validation are integral
        return expr
    if isinstance(expr, list):
        return [_operand("", expr, index, data, budget) for index in range(len(expr))]
    ((operator, values),) = expr.items()
    if operator == "var":
        return _var(values, data)
    if operator == "if":
        guard = _operand(operator, values, 0, data, budget)
        truth = _truth(guard)
        if truth is None:
            raise _Failure(f"the guard of an if-operation is neither truthy nor falsy: {_show(guard)}")
        return _operand(operator, values, 1 if truth else 2, data, budget)
    if operator == "and":
        value: Any = None
        for index in range(len(values)):
            value = _operand(operator, values, index, data, budget)
            truth = _truth(value)
            if truth is None:
                raise _Failure(f'operand #{index + 1} of "and" is neither truthy nor falsy: {_show(value)}')
            if not truth:
                break
        return value
    if operator == "!":
        value = _operand(operator, values, 0, data, budget)
        truth = _truth(value)
        if truth is None:
            raise _Failure(f'the operand of "!" is neither truthy nor falsy: {_show(value)}')
        return not truth
    if operator == "reduce":
        return _reduce(values, data, budget)
    if operator in ("plusTime", "dccDateOfBirth", "extractFromUVCI"):
        return _on_string(operator, values, data, budget)
    operands = [_operand(operator, values, index, data, budget) for index in range(len(values))]
    if operator == "===":
        return _equal(operands[0], operands[1], budget, 0)
    if operator == "in":
        if operands[1] is None:
            # The official suite's "null-safety" case: nothing is a member of a missing array. The
            # spec text calls a non-array an error; the suite settles it, and a rule set cannot
            # exploit it to pass a product check: rule_set.py refuses a rule set whose rules read a
            # value set it does not carry.
            return False
        if not isinstance(operands[1], (list, tuple)):
            raise _Failure(f'the right-hand side of "in" must be an array, but it is: {_show(operands[1])}')
        if _kind(operands[0]) is None:
            raise _Failure(f"cannot compare a value that is not JSON: {_show(operands[0])}")
        return any(_equal(operands[0], item, budget, 0) for item in operands[1])
    compare = _COMPARE.get(operator)
    if operator == "+" or compare is not None:
        numbers = [_integer(value) for value in operands]
        if any(number is None for number in numbers):
            raise _Failure(f'the operands of "{operator}" must be integers: {_show(operands)}')
        if compare is None:
            total = numbers[0] + numbers[1]  # type: ignore[operator]
            if abs(total) > MAX_SAFE_INTEGER:
                raise _Failure(f'the sum of "+" is beyond JavaScript\'s exact integers: {_show(total)}')
            return total
        return all(compare(left, right) for left, right in itertools.pairwise(numbers))
    if not all(isinstance(value, DateTime) for value in operands):
        raise _Failure(f'the operands of "{operator}" must be date-times (from plusTime or dccDateOfBirth): '
                       f"{_show(operands)}")
    compare = _COMPARE_DATES[operator]
    return all(compare(left, right) for left, right in itertools.pairwise(operands))


def _operand(operator: str, values: list[Any], index: int, data: Any, budget: _Budget) -> Any:
    try:
        return _eval(values[index], data, budget)
    except _Failure as failure:
        failure.place.append(f"{operator}[{index}]")
        raise


def _var(path: str, data: Any) -> Any:
    """``{"var": path}``: drill down by object key or array index; anything missing or undrillable is null."""
    if path == "":
        return data
    value = data
    for fragment in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(fragment)
        elif isinstance(value, (list, tuple)) and _INDEX.fullmatch(fragment):
            index = int(fragment)
            value = value[index] if index < len(value) else None
        else:
            return None
    return value


def _reduce(values: list[Any], data: Any, budget: _Budget) -> Any:
    items = _operand("reduce", values, 0, data, budget)
    if items is None:
        return _operand("reduce", values, 2, data, budget)
    if not isinstance(items, (list, tuple)):
        raise _Failure(f'the operand of "reduce" must be an array or null, but it is: {_show(items)}')
    accumulator = _operand("reduce", values, 2, data, budget)
    for current in items:
        accumulator = _operand("reduce", values, 1, {"current": current, "accumulator": accumulator, "data": data},
                               budget)
    return accumulator


def _on_string(operator: str, values: list[Any], data: Any, budget: _Budget) -> Any:
    """``plusTime``, ``dccDateOfBirth`` and ``extractFromUVCI``: an operation on the string its operand gives."""
    text = _operand(operator, values, 0, data, budget)
    if operator == "extractFromUVCI":
        if text is not None and not isinstance(text, str):
            raise _Failure(f'the UCI operand of "extractFromUVCI" must be a string or null, but it is: {_show(text)}')
        index = _integer(values[1])
        if text is None or index is None or index < 0:
            return None
        fragments = _UVCI_SEPARATORS.split(text.removeprefix(_UVCI_PREFIX))
        return fragments[index] if index < len(fragments) else None
    if not isinstance(text, str):
        raise _Failure(f'the date operand of "{operator}" must be a string, but it is: {_show(text)}')
    try:
        if operator == "dccDateOfBirth":
            return dcc_date_of_birth(text)
        return plus_time(parse_date_time(text), _integer(values[1]) or 0, values[2])
    except ValueError as error:
        raise _Failure(f"{operator}: {error}") from None


# --- values --------------------------------------------------------------------------------------------------

def _integer(value: object) -> int | None:
    """``value`` as an integer when it is a JSON number with an integral value, else None (bool is no number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _truth(value: object) -> bool | None:
    """True for truthy, False for falsy, None for neither (date-times, non-integers, non-JSON values)."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, str):
        return value != ""
    if isinstance(value, (int, float)):
        number = _integer(value)
        return None if number is None else number != 0
    if isinstance(value, (list, tuple)):
        return len(value) > 0
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return len(value) > 0
    return None


def _kind(value: object) -> str | None:
    """The JSON type of ``value`` (or "date-time"); None for what JSON cannot hold."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number" if isinstance(value, int) or math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object" if all(isinstance(key, str) for key in value) else None
    if isinstance(value, DateTime):
        return "date-time"
    return None


def _equal(left: Any, right: Any, budget: _Budget, depth: int) -> bool:
    """``===``: same JSON type and value, arrays and objects compared item by item, no coercion."""
    budget.spend()
    kind, right_kind = _kind(left), _kind(right)
    if kind is None or right_kind is None:
        raise _Failure(f"cannot compare a value that is not JSON: {_show(left if kind is None else right)}")
    if kind != right_kind:
        return False
    if kind in ("array", "object"):
        if len(left) != len(right):
            return False
        if depth >= MAX_DEPTH:
            raise _Failure(f"cannot compare values nested deeper than {MAX_DEPTH}")
        if kind == "array":
            return all(_equal(a, b, budget, depth + 1) for a, b in zip(left, right, strict=True))
        return all(key in right and _equal(left[key], right[key], budget, depth + 1) for key in left)
    return bool(left == right)


def _show(value: object) -> str:
    """A short text of ``value`` for a message, however large or strange the value is."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, DateTime):
        return value.isoformat()
    try:
        return _repr.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an integer too long for str(); the message must still be made
        return f"<{type(value).__name__}>"


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."
