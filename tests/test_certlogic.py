"""CertLogic: the official test suites in full, then the spec's date rules, the bounds, and hostile data.

One test per assertion of every testSuite/*.json (id ``file.json::case name::index``; a repeated case
name gets `` #2``) and one per expression of every validation-testSuite/*.json, from the specification
checkout in shared/certlogic next to the repository.

The suite's ``directive`` (file, case or assertion; schemas/CertLogic-testSuite.json) is ``skip`` or
``only``. ``only`` focuses a debugging run of the reference's Mocha runner; it says nothing about the
other assertions, so everything runs here. ``skip`` marks what the reference implementations do not
pass; those assertions run too (their ids end in ``(skip-marked)``) and must pass, except any listed
in SPEC_CONFLICTS (none now), which would be strict xfails that must raise CertLogicError.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrgate.rules import certlogic
from qrgate.rules.certlogic import MAX_DEPTH, CertLogicError, DateTime, evaluate, validate

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "certlogic"

if not (SPEC / "testSuite").is_dir():
    pytest.skip(f"CertLogic specification not found at {SPEC} (the shared/ checkout next to the repository)",
                allow_module_level=True)

# Assertions the suite marks ``skip`` whose expectation contradicts the specification: (file, case) -> why.
# Assertions that contradict the specification's text, where the evaluator follows the text: none.
# The "null-safety" case of ins-with-nulls.json ("in" on a null array is false, where the text calls a
# non-array an error) is followed as the suite says; see certlogic.py.
SPEC_CONFLICTS: dict[tuple[str, str], str] = {}


def _assertions() -> list[Any]:
    params = []
    for path in sorted((SPEC / "testSuite").glob("*.json")):
        suite = json.loads(path.read_text(encoding="utf-8"))
        seen: dict[str, int] = {}
        for case in suite["cases"]:
            seen[case["name"]] = seen.get(case["name"], 0) + 1
            name = case["name"] if seen[case["name"]] == 1 else f"{case['name']} #{seen[case['name']]}"
            for index, assertion in enumerate(case["assertions"]):
                expression = assertion.get("certLogicExpression", case.get("certLogicExpression"))
                skip_marked = "skip" in (suite.get("directive"), case.get("directive"), assertion.get("directive"))
                marks: tuple[Any, ...] = ()
                conflict = SPEC_CONFLICTS.get((path.name, case["name"]))
                if skip_marked and conflict is not None:
                    marks = (pytest.mark.xfail(strict=True, raises=CertLogicError, reason=conflict),)
                params.append(pytest.param(
                    expression, assertion["data"], assertion["expected"], id=f"{path.name}::{name}::{index}"
                    + (" (skip-marked)" if skip_marked else ""), marks=marks))
    return params


def _validation_cases() -> list[Any]:
    params = []
    for path in sorted((SPEC / "validation-testSuite").glob("*.json")):
        suite = json.loads(path.read_text(encoding="utf-8"))
        for index, case in enumerate(suite["cases"]):
            params.append(pytest.param(case["certLogicExpression"], [issue["message"] for issue in case["issues"]],
                                       id=f"{path.name}::{index}"))
    return params


ASSERTIONS = _assertions()
VALIDATION_CASES = _validation_cases()


def _json(value: Any) -> str:
    """Type-exact comparison: json.dumps tells false from 0 and 1 from 1.0, which == does not."""
    return json.dumps(value, sort_keys=True, default=repr)


# --- the official suites -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expression", "data", "expected"), ASSERTIONS)
def test_evaluation_assertion(expression: Any, data: Any, expected: Any) -> None:
    assert _json(evaluate(expression, data)) == _json(expected)


def test_every_suite_expression_is_valid() -> None:
    """The suite's expressions conform to the expression schema, so the validator must accept each one."""
    for param in ASSERTIONS:
        assert validate(param.values[0]) == [], param.id


def test_the_suites_are_all_there() -> None:
    files = {param.id.split("::")[0] for param in ASSERTIONS}
    assert len(files) == len(list((SPEC / "testSuite").glob("*.json"))) >= 14
    assert len(ASSERTIONS) >= 232 and len(VALIDATION_CASES) >= 23
    assert not [param for param in ASSERTIONS if param.marks], "every assertion runs and must pass"


@pytest.mark.parametrize(("expression", "official_issues"), VALIDATION_CASES)
def test_validation_case(expression: Any, official_issues: list[str]) -> None:
    problems = validate(expression)
    if not official_issues:
        assert problems == []
        return
    assert problems, "an invalid expression must give at least one problem"
    for message in official_issues:  # the reference validator's wording, after our place prefix
        assert any(problem.endswith(message) for problem in problems), (message, problems)
    with pytest.raises(CertLogicError, match="invalid CertLogic expression"):
        evaluate(expression, {})


def test_in_on_a_non_array_is_an_error_and_on_null_is_false() -> None:
    """A string, number or object on the right of "in" is an error (no substring or key tests, as
    JsonLogic would do); a missing (null) array holds nothing, as the suite's null-safety case says."""
    for haystack in ("abc", 1, {"a": 1}):
        with pytest.raises(CertLogicError, match='right-hand side of "in"'):
            evaluate({"in": ["a", {"var": "y"}]}, {"y": haystack})
    assert evaluate({"in": ["a", {"var": "y"}]}, {}) is False
    assert evaluate({"in": ["a", {"var": "y"}]}, {"y": None}) is False


# --- dates, as the specification defines them ----------------------------------------------------------------

def plus(text: Any, amount: int = 0, unit: str = "day") -> str:
    value = evaluate({"plusTime": [{"var": ""}, amount, unit]}, text)
    assert isinstance(value, DateTime)
    return value.isoformat()


def dob(text: Any) -> str:
    return str(evaluate({"dccDateOfBirth": [{"var": ""}]}, text))


@pytest.mark.parametrize(("text", "expected"), [
    ("2004", "2004-12-31T00:00:00.000Z"), ("2004-02", "2004-02-29T00:00:00.000Z"),
    ("2003-02", "2003-02-28T00:00:00.000Z"), ("2021-05-04", "2021-05-04T00:00:00.000Z"),
    ("2021-05-04T13:37:42", "2021-05-04T13:37:42.000Z"), ("2021-05-04T13:37:42Z", "2021-05-04T13:37:42.000Z"),
    ("2021-08-20T12:03:12+2", "2021-08-20T10:03:12.000Z"), ("2021-08-20T12:03:12+02", "2021-08-20T10:03:12.000Z"),
    ("2021-08-20T12:03:12+130", "2021-08-20T10:33:12.000Z"), ("2021-08-20T12:03:12+0200", "2021-08-20T10:03:12.000Z"),
    ("2021-08-20T12:03:12+1:00", "2021-08-20T11:03:12.000Z"), ("2021-08-20T12:03:12-02:30", "2021-08-20T14:33:12.000Z"),
    ("2021-05-04T13:37:42-00:00", "2021-05-04T13:37:42.000Z"), ("2021-08-01T00:00:00.1", "2021-08-01T00:00:00.100Z"),
    ("2021-08-01T00:00:00.01Z", "2021-08-01T00:00:00.010Z"), ("2021-08-01T00:00:00.0009+1", "2021-07-31T23:00:00.000Z"),
    ("2021-08-01T00:00:00.999999+01", "2021-07-31T23:00:00.999Z"),
    ("2021-08-01T00:00:00.5+0100", "2021-07-31T23:00:00.500Z"),
    ("2021-08-01T00:00:00.5-1:30", "2021-08-01T01:30:00.500Z"),
    ("2021-08-01T00:00:00.5+01:30", "2021-07-31T22:30:00.500Z"),
    ("2021-08-01T00:00:00.5-130", "2021-08-01T01:30:00.500Z"),
])
def test_plus_time_reads_every_allowed_format(text: str, expected: str) -> None:
    assert plus(text) == expected


def test_a_date_time_where_the_dcc_says_date_is_read_as_the_date_time() -> None:
    """A payload's ``dt`` written as a date-time keeps its time; without an offset it is UTC (spec 1.0.1)."""
    rule = {"not-before": [{"plusTime": [{"var": "payload.v.0.dt"}, 14, "day"]},
                           {"plusTime": ["2021-06-15T10:00:00Z", 0, "day"]}]}
    for written, expected in (("2021-06-01", False), ("2021-06-01T10:00:00Z", True), ("2021-06-01T10:00:00", True),
                              ("2021-06-01T09:59:59", False), ("2021-06-01T12:00:00+02:00", True),
                              ("2021-06-01T11:00:00+02:00", False)):
        assert evaluate(rule, {"payload": {"v": [{"dt": written}]}}) is expected, written


@pytest.mark.parametrize(("start", "amount", "unit", "expected"), [
    ("2020-02-29", 1, "day", "2020-03-01"), ("2020-02-29", 1, "month", "2020-03-29"),
    ("2020-02-29", 1, "year", "2021-03-01"),  # the spec's leap-day table
    ("2021-01-31", 1, "month", "2021-03-03"), ("2021-03-31", -1, "month", "2021-03-03"),
    ("2021-01-01", -13, "month", "2019-12-01"), ("2004-01", 18, "year", "2022-01-31"),
    ("2021-03-27T12:00:00Z", 24, "hour", "2021-03-28T12:00:00"),  # no DST: UTC throughout
])
def test_plus_time_offsets_as_javascript_date_does(start: str, amount: int, unit: str, expected: str) -> None:
    assert plus(start, amount, unit).startswith(expected)


@pytest.mark.parametrize("text", [
    "2021-09-99", "2022-13", "2021-02-29", "2021-00-10", "2021-06-01T24:00:00", "2021-06-01T10:60:00",
    "2021-06-01T10:00:60", "2021-06-01T10:00:00+24:00", "2021-06-01T10:00:00+01:60", "2021-06-01T10:00:00+01:",
    "2021-06-01t10:00:00z", "2021-06-01 10:00:00", "2021-06-01T10:00", "21-06-01", "", " 2021-06-01",
    "2021-06-01\n", "\uff12\uff10\uff12\uff11-01-01", "\u0662\u0660\u0662\u0661", "2021-06-01T10:00:00.Z",
    "2021-06-01T10:00:00+123:00", "x" * 100_000,
])
def test_an_invalid_date_string_is_an_evaluation_error(text: str) -> None:
    with pytest.raises(CertLogicError, match="plusTime"):
        plus(text)


def test_dcc_date_of_birth_takes_only_the_dob_formats() -> None:
    assert dob("2000-02") == "2000-02-29T00:00:00.000Z" and dob("1900-02") == "1900-02-28T00:00:00.000Z"
    for text in ("1990-05-12T00:00:00", "", "1990-5", "1990-13", "1990-02-30", "XXXX"):
        with pytest.raises(CertLogicError, match="dccDateOfBirth"):
            dob(text)
    for value in (None, 1990, ["1990"]):
        with pytest.raises(CertLogicError, match="must be a string"):
            dob(value)


def test_date_times_are_results_but_neither_truthy_nor_falsy() -> None:
    moment = {"plusTime": ["2021-01-01", 0, "day"]}
    value = evaluate(moment, None)
    assert isinstance(value, DateTime) and value.epoch_ms == 1_609_459_200_000
    for expression in ({"if": [moment, 1, 2]}, {"!": [moment]}, {"and": [True, moment]}, {"<": [moment, 1]},
                       {"plusTime": [moment, 1, "day"]}, {"after": ["2021-01-02", moment]}):
        with pytest.raises(CertLogicError):
            evaluate(expression, None)
    assert evaluate({"===": [moment, {"plusTime": ["2020-12-31T23:00:00-01:00", 0, "hour"]}]}, None) is True


def test_date_times_out_of_javascripts_range_are_errors() -> None:
    assert plus("2021-01-01", 270_000, "year") == "+272021-01-01T00:00:00.000Z"
    for amount, unit in ((280_000, "year"), (10**9, "month"), (10**20, "hour"), (-(10**3000), "day")):
        with pytest.raises(CertLogicError, match="out of range"):
            plus("2021-01-01", amount, unit)


# --- bounds --------------------------------------------------------------------------------------------------

def nested(levels: int) -> Any:
    expression: Any = True
    for _ in range(levels):
        expression = {"!": [expression]}
    return expression


def test_nesting_is_limited_to_max_depth() -> None:
    assert validate(nested(MAX_DEPTH)) == [] and evaluate(nested(MAX_DEPTH), None) is True
    assert validate(nested(MAX_DEPTH + 1)) == ["![0]." * (MAX_DEPTH - 1) + f"![0]: nests deeper than {MAX_DEPTH} "
                                               "operations and arrays"]
    arrays: Any = 1
    for _ in range(MAX_DEPTH + 1):
        arrays = [arrays]
    for expression in (nested(MAX_DEPTH + 1), nested(100_000), arrays):
        assert validate(expression)
        with pytest.raises(CertLogicError, match="nests deeper"):
            evaluate(expression, None)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert validate(cyclic)


def test_reduce_over_a_huge_array_runs_out_of_steps_quickly() -> None:
    count = {"reduce": [{"var": "items"}, {"+": [{"var": "accumulator"}, 1]}, 0]}
    assert evaluate(count, {"items": [0] * 10_000}) == 10_000
    started = time.perf_counter()
    with pytest.raises(CertLogicError, match="more than 100000 steps"):
        evaluate(count, {"items": [0] * 1_000_000})
    assert time.perf_counter() - started < 2.0


def test_comparing_exponentially_shared_values_runs_out_of_steps() -> None:
    """An accumulator doubled each round is 2**40 nodes of shared references: === must not walk them all."""
    doubling = {"reduce": [{"var": "items"}, [{"var": "accumulator"}, {"var": "accumulator"}], [1]]}
    expression = {"===": [doubling, doubling]}
    with pytest.raises(CertLogicError, match=r"steps|deeper"):
        evaluate(expression, {"items": [0] * 40})


def test_data_is_compared_at_most_max_depth_deep() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(CertLogicError, match="deeper"):
        evaluate({"===": [{"var": "a"}, {"var": "b"}]}, {"a": deep, "b": deep})


def test_sums_stay_within_javascripts_exact_integers() -> None:
    assert evaluate({"+": [{"var": "x"}, 1]}, {"x": 2**53 - 2}) == 2**53 - 1
    with pytest.raises(CertLogicError, match="exact integers"):
        evaluate({"+": [{"var": "x"}, 1]}, {"x": 2**53 - 1})


# --- data a CBOR payload can hold and JSON cannot -------------------------------------------------------------

@pytest.mark.parametrize("value", [
    b"\x00bytes", bytearray(b"x"), dt.datetime(2021, 6, 1, tzinfo=dt.UTC), dt.date(2021, 6, 1),
    math.nan, math.inf, -math.inf, {1: "integer key"}, {"a"}, object(),
])
def test_a_value_json_cannot_hold_is_an_error_wherever_it_is_used(value: Any) -> None:
    data = {"x": value, "list": ["a", "b"]}
    assert evaluate({"var": "x"}, data) is value  # var returns what is there
    uses = [{"if": [{"var": "x"}, 1, 2]}, {"!": [{"var": "x"}]}, {"and": [True, {"var": "x"}]},
            {"<": [{"var": "x"}, 1]}, {"+": [{"var": "x"}, 1]}, {"plusTime": [{"var": "x"}, 0, "day"]},
            {"dccDateOfBirth": [{"var": "x"}]}, {"extractFromUVCI": [{"var": "x"}, 0]},
            {"in": ["a", {"var": "x"}]}, {"reduce": [{"var": "x"}, 1, 0]}, {"===": [{"var": "x"}, "a"]},
            {"in": [{"var": "x"}, {"var": "list"}]}, {"in": [{"var": "x"}, []]}]
    for expression in uses:
        with pytest.raises(CertLogicError):
            evaluate(expression, data)


def test_integers_beyond_float_range_compare_exactly() -> None:
    big = 10**400  # a CBOR bignum: no float holds it
    data = {"a": big, "b": big + 1, "huge": 10**5000}
    assert evaluate({"<": [{"var": "a"}, {"var": "b"}]}, data) is True
    assert evaluate({"===": [{"var": "a"}, {"var": "b"}]}, data) is False
    assert evaluate({"if": [{"var": "huge"}, "truthy", "falsy"]}, data) == "truthy"
    with pytest.raises(CertLogicError, match="exact integers"):  # and the message is made without str() of it
        evaluate({"+": [{"var": "huge"}, 1]}, data)


def test_a_non_integral_number_is_a_number_but_no_integer() -> None:
    """The spec's truthiness and comparisons are for integers; 1.5 is equal only to itself."""
    for expression in ({"if": [{"var": "x"}, 1, 2]}, {"!": [{"var": "x"}]}, {"<": [{"var": "x"}, 2]},
                       {"+": [{"var": "x"}, 1]}, {"plusTime": ["2021-01-01", {"var": "x"}, "day"]}):
        with pytest.raises(CertLogicError):
            evaluate(expression, {"x": 1.5})
    assert evaluate({"===": [{"var": "x"}, {"var": "y"}]}, {"x": 1.5, "y": 1.5}) is True
    assert validate(1.5) == ["1.5 is a non-integer number"]


def test_integral_floats_are_integers_as_in_json() -> None:
    assert evaluate({"<": [{"var": "dn"}, {"var": "sd"}]}, {"dn": 1.0, "sd": 2}) is True
    assert evaluate({"===": [{"var": "dn"}, 1]}, {"dn": 1.0}) is True
    assert evaluate({"===": [True, 1]}, None) is False
    next_day = evaluate({"plusTime": ["2021-01-02", 0, "day"]}, None)
    assert evaluate({"plusTime": ["2021-01-01", 1.0, "day"]}, None) == next_day


def test_a_mapping_that_fails_on_access_gives_a_certlogic_error() -> None:
    class Hostile(dict[str, Any]):
        def get(self, key: Any, default: Any = None) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(CertLogicError, match="RuntimeError"):
        evaluate({"var": "payload.v"}, {"payload": Hostile(v=1)})


# --- anything at all -----------------------------------------------------------------------------------------

_leaves = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(["", "a", "2021-06-01", "2004", "2021-06-01T10:00:00+01", "URN:UVCI:01:NL:1#2",
                                     "x.0", "day", "year", "accumulator", "current"]), st.binary(max_size=3))
_json_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.sampled_from(["x", "y", "0", "current"]), inner, max_size=3),
                            max_leaves=12)
_operators = st.sampled_from(["var", "if", "and", "!", "===", "in", "+", "<", ">=", "after", "not-before", "plusTime",
                              "reduce", "extractFromUVCI", "dccDateOfBirth", "or", "all"])
_expressions = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4) | st.builds(
    lambda op, args: {op: args}, _operators, st.lists(inner, max_size=4) | inner), max_leaves=20)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions, _json_values)
def test_nothing_but_certlogic_error_leaves_evaluate(expression: Any, data: Any) -> None:
    problems = validate(expression)
    assert isinstance(problems, list) and all(isinstance(problem, str) for problem in problems)
    try:
        evaluate(expression, data)
    except CertLogicError:
        pass
    else:
        assert problems == []


def test_the_evaluator_is_its_own_not_a_jsonlogic_library() -> None:
    """No hidden dependency: importing the evaluator loads no JsonLogic package (panzi-json-logic is json_logic)."""
    probe = ("import sys, qrgate.rules.certlogic; "
             "print(sorted(m for m in sys.modules if 'logic' in m.lower() and not m.startswith('qrgate')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
    source = Path(certlogic.__file__).parent
    for path in source.glob("certlogic*.py"):
        assert "json_logic" not in path.read_text(encoding="utf-8")
