"""The rule-set format: the province's validation rules (EU-DCC business rules in CertLogic) as a signed list.

Signed payload (CBOR map, text keys, in the envelope of ``passes/signed_list.py``)::

    type        "qrgate-rule-set"
    version     int >= 1, newer than the rule set in force
    issued_at   int, epoch seconds
    expires_at  int, epoch seconds
    content     text: the rule set as JSON (below), at most MAX_RULE_SET_BYTES

The rules travel as JSON text inside the CBOR envelope, not as CBOR: CertLogic is defined over JSON values
(CBOR has byte strings, tags, non-text keys and floats that JSON has not, and two encoders could turn one
rule into two different expressions), EU rules are written and exchanged as JSON, and a CertLogic
expression nests deeper than the 16 CBOR levels a pass may use. The gate evaluates exactly the JSON the
province wrote. The same JSON, as a plain file, is the built-in rule set (``data/rules-vn-2021.json``),
the source of ``qrgate-issuer rules build`` and what ``qrgate verify --rules FILE.json`` reads.

Content (a JSON object)::

    country      "VN": the country whose acceptance rules these are (each Acceptance rule's Country)
    description  text, optional: what the set is, for people
    value_sets   {name: [code, ...]}: the codes rules read as external.valueSets.<name>
    rules        [rule, ...]: EU business rules (Identifier, Type, Country, Version, SchemaVersion, Engine,
                 EngineVersion, CertificateType, Description, ValidFrom, ValidTo, AffectedFields, Logic),
                 each with qrgate's one extension, "Reason" (below)

``Reason`` is the named reason the gate shows when the rule fails (``test_positive``,
``vaccination_incomplete``, ...; absent: ``rule_failed``). The EU format has none: its apps show the
rule's Description, and a gate has a red light and a one-word event reason, not a paragraph.

Every Logic is checked with ``certlogic.validate`` when a rule set is read: one invalid expression, or any
other fault in any rule, refuses the whole set (``malformed``, the detail names the rule), as for the
trust list: a rule set that two gate versions read differently would be worse than one every gate refuses.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..passes.signed_list import ListOutcome, ListRefused, ListType, SignedList, check_fields
from ..passes.verdict import Reason
from .certlogic import validate

MAX_RULE_SET_BYTES = 1024 * 1024  # the EU's whole gateway held ~1,000 rules of 1-3 KiB; a province needs dozens
MAX_RULE_SET_DOCUMENT_BYTES = MAX_RULE_SET_BYTES + 4 * 1024  # the signed document: content, envelope, signature
MAX_RULES = 256
MAX_VALUE_SETS = 64
MAX_VALUE_SET_CODES = 2_000  # per value set; the EU's largest (vaccine names) has < 100
MAX_CODE_CHARS = 128
MAX_TEXT_CHARS = 2_000  # a description
MAX_LOGIC_NODES = 2_000  # JSON values in one Logic: an EU rule has 10-60
MAX_LOGIC_DEPTH = 48  # nesting of one Logic: an EU rule nests 6-14
MAX_AFFECTED_FIELDS = 64
MAX_DESCRIPTIONS = 16

ACCEPTANCE, INVALIDATION = "Acceptance", "Invalidation"
GENERAL, VACCINATION, TEST, RECOVERY = "General", "Vaccination", "Test", "Recovery"
CERTIFICATE_TYPES = (GENERAL, VACCINATION, TEST, RECOVERY)
# The reasons a rule may give: the validation-rule members of Reason, nothing a signature or a date decides.
RULE_REASONS = frozenset({
    Reason.TEST_POSITIVE, Reason.TEST_TOO_OLD, Reason.TEST_NOT_ACCEPTED, Reason.VACCINATION_INCOMPLETE,
    Reason.VACCINATION_NOT_YET_VALID, Reason.VACCINATION_EXPIRED, Reason.PRODUCT_NOT_ACCEPTED,
    Reason.RECOVERY_NOT_YET_VALID, Reason.RECOVERY_EXPIRED, Reason.CERTIFICATE_TYPE_NOT_ACCEPTED, Reason.RULE_FAILED,
})

_REASON_NAMES = frozenset(str(reason) for reason in RULE_REASONS)
_PAYLOAD_FIELDS = frozenset({"type", "version", "issued_at", "expires_at", "content"})
_CONTENT_FIELDS = frozenset({"country", "description", "value_sets", "rules"})
_RULE_FIELDS = frozenset({
    "Identifier", "Type", "Country", "Version", "SchemaVersion", "Engine", "EngineVersion", "CertificateType",
    "Description", "ValidFrom", "ValidTo", "AffectedFields", "Logic", "Reason",
})
# The EU gateway's own checks: the prefix names the certificate type (IR: an invalidation rule, any type),
# the two letters the country.
_IDENTIFIER = re.compile(r"(GR|VR|TR|RR|IR)-([A-Z]{2})-(\d{4})")
_PREFIX_TYPES = {"GR": GENERAL, "VR": VACCINATION, "TR": TEST, "RR": RECOVERY}
_SEMVER = re.compile(r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})")
_COUNTRY = re.compile(r"[A-Z]{2}")
_VALUE_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LANG = re.compile(r"[a-z]{2}")


@dataclass(frozen=True, slots=True)
class Rule:
    """One business rule as read and checked; ``logic`` is the CertLogic expression, a JSON value."""

    identifier: str
    type: str  # ACCEPTANCE or INVALIDATION
    country: str
    version: tuple[int, int, int]
    certificate_type: str  # one of CERTIFICATE_TYPES
    valid_from: float  # epoch seconds
    valid_to: float
    logic: Any
    reason: Reason  # what the gate shows when this rule fails
    description: str  # the English one (else the first), for logs and technicians
    affected_fields: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.identifier} v{'.'.join(map(str, self.version))}"


@dataclass(frozen=True, slots=True)
class RuleSetContent:
    """A rule set as read: its envelope fields (0 and "forever" for an unsigned file) and its content."""

    version: int
    issued_at: int
    expires_at: int
    country: str
    description: str | None
    value_sets: Mapping[str, tuple[str, ...]]
    rules: tuple[Rule, ...]
    digest: bytes | None  # SHA-256 of the signed document as received; None for a JSON file


def read_rule_set(signed: SignedList) -> RuleSetContent:
    """The rule set in ``signed``; ListRefused (wrong_type, malformed, too_large) if it is not one."""
    if signed.type is not ListType.RULE_SET:
        raise ListRefused(ListOutcome.WRONG_TYPE, f"type {signed.type}, expected {ListType.RULE_SET}")
    check_fields(signed.payload, _PAYLOAD_FIELDS, "rule set")
    text = signed.payload.get("content")
    if not isinstance(text, str):
        raise ListRefused(ListOutcome.MALFORMED, "content must be text: the rule set as JSON")
    return parse_content(text, version=signed.version, issued_at=signed.issued_at, expires_at=signed.expires_at,
                         digest=signed.digest)


def parse_content(text: str | bytes, *, version: int = 0, issued_at: int = 0, expires_at: int = 2**63 - 1,
                  digest: bytes | None = None) -> RuleSetContent:
    """Read rule-set JSON text; ListRefused names the first fault (and the rule it is in)."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_RULE_SET_BYTES:
        raise ListRefused(ListOutcome.TOO_LARGE, f"content is {size} bytes, at most {MAX_RULE_SET_BYTES}")
    try:
        content = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise ListRefused(ListOutcome.MALFORMED, "content nests too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ListRefused(ListOutcome.MALFORMED, f"content is not JSON: {exc}") from None
    if not isinstance(content, dict):
        raise ListRefused(ListOutcome.MALFORMED, "content must be a JSON object")
    check_fields(content, _CONTENT_FIELDS, "rule set")
    country = content.get("country")
    if not isinstance(country, str) or not _COUNTRY.fullmatch(country):
        raise ListRefused(ListOutcome.MALFORMED, "country must be two capital letters (ISO 3166-1 alpha-2)")
    description = content.get("description")
    if description is not None and not _text(description, MAX_TEXT_CHARS):
        raise ListRefused(ListOutcome.MALFORMED, f"description must be text of 1 to {MAX_TEXT_CHARS} characters")
    value_sets = _value_sets(content.get("value_sets", {}))
    items = content.get("rules")
    if not isinstance(items, list):
        raise ListRefused(ListOutcome.MALFORMED, "rules must be an array")
    if len(items) > MAX_RULES:
        raise ListRefused(ListOutcome.TOO_LARGE, f"{len(items)} rules, at most {MAX_RULES}")
    rules = tuple(_rule(item, index, country) for index, item in enumerate(items))
    for index, rule in enumerate(rules):
        # "x in <missing array>" is false (certlogic.py, as the official suite says), so a rule
        # reading a value set the rule set does not carry would fail quietly, or, negated, pass
        # quietly: the whole set is refused instead, naming the rule and the set.
        missing = sorted(name for name in _value_sets_read(rule.logic) if name not in value_sets)
        if missing:
            raise ListRefused(ListOutcome.MALFORMED, f"rules[{index}] {rule.label}: reads value set "
                              f"{', '.join(missing)}, which the rule set does not carry")
    seen: set[tuple[str, tuple[int, int, int]]] = set()
    kinds: dict[str, tuple[str, str]] = {}
    for index, rule in enumerate(rules):
        if (rule.identifier, rule.version) in seen:
            raise ListRefused(ListOutcome.MALFORMED, f"rules[{index}] {rule.label}: that identifier and version twice")
        seen.add((rule.identifier, rule.version))
        # The versions of one rule replace each other in time: they must be the same kind of rule.
        if kinds.setdefault(rule.identifier, (rule.type, rule.certificate_type)) != (rule.type, rule.certificate_type):
            raise ListRefused(ListOutcome.MALFORMED, f"rules[{index}] {rule.label}: another CertificateType than "
                              "the other versions of that identifier")
    return RuleSetContent(version=version, issued_at=issued_at, expires_at=expires_at, country=country,
                          description=description, value_sets=value_sets, rules=rules, digest=digest)


def _value_sets(value_sets: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value_sets, dict):
        raise ListRefused(ListOutcome.MALFORMED, "value_sets must be an object of name: [code, ...]")
    if len(value_sets) > MAX_VALUE_SETS:
        raise ListRefused(ListOutcome.TOO_LARGE, f"{len(value_sets)} value sets, at most {MAX_VALUE_SETS}")
    out: dict[str, tuple[str, ...]] = {}
    for name, codes in value_sets.items():
        if not _VALUE_SET_NAME.fullmatch(name):
            raise _malformed(f"value set name {name!r}", "letters, digits, '.', '_', '-' (1 to 64)")
        if not isinstance(codes, list) or len(codes) > MAX_VALUE_SET_CODES:
            raise _malformed(f"value_sets.{name}", f"must be an array of at most {MAX_VALUE_SET_CODES} codes")
        if not all(_text(code, MAX_CODE_CHARS) for code in codes):
            raise _malformed(f"value_sets.{name}", f"every code is text of 1 to {MAX_CODE_CHARS} characters")
        out[name] = tuple(codes)
    return out


def _rule(item: Any, index: int, country: str) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(item, dict):
        raise ListRefused(ListOutcome.MALFORMED, f"{where}: expected an object")
    identifier = item.get("Identifier")
    match = _IDENTIFIER.fullmatch(identifier) if isinstance(identifier, str) else None
    if match is None:
        raise _malformed(where, "Identifier must look like VR-VN-0001 (GR, VR, TR, RR or IR)")
    where = f"{where} {identifier}"
    check_fields(item, _RULE_FIELDS, where)

    def fail(problem: str) -> ListRefused:
        return _malformed(where, problem)

    prefix, id_country = match.group(1), match.group(2)
    rule_type, rule_country, certificate_type = item.get("Type"), item.get("Country"), item.get("CertificateType")
    if rule_type not in (ACCEPTANCE, INVALIDATION) or (rule_type == INVALIDATION) != (prefix == "IR"):
        raise fail("Type must be Acceptance, or Invalidation for an IR- rule")
    if rule_country != id_country:
        raise fail(f"Country must be {id_country}, the country of its Identifier")
    if rule_type == ACCEPTANCE and rule_country != country:
        # An acceptance rule of another country would never apply here: a typo that silently drops a rule.
        raise fail(f"an Acceptance rule of {rule_country} in a rule set of {country}")
    if certificate_type not in CERTIFICATE_TYPES or (prefix != "IR" and certificate_type != _PREFIX_TYPES[prefix]):
        raise fail(f"CertificateType must be {_PREFIX_TYPES.get(prefix, ' or '.join(CERTIFICATE_TYPES))}")
    version = _semver(item.get("Version"), where, "Version")
    _semver(item.get("SchemaVersion"), where, "SchemaVersion")
    if item.get("Engine") != "CERTLOGIC":
        raise fail("Engine must be CERTLOGIC")
    if _semver(item.get("EngineVersion"), where, "EngineVersion")[0] > 1:
        raise fail("EngineVersion: this gate evaluates CertLogic 1.x")
    valid_from = _time(item.get("ValidFrom"), where, "ValidFrom")
    valid_to = _time(item.get("ValidTo"), where, "ValidTo")
    if valid_to <= valid_from:
        raise fail("ValidTo is not after ValidFrom")
    fields = item.get("AffectedFields")
    if (not isinstance(fields, list) or not 0 < len(fields) <= MAX_AFFECTED_FIELDS
            or not all(_text(field, MAX_CODE_CHARS) for field in fields)):
        raise fail(f"AffectedFields must be 1 to {MAX_AFFECTED_FIELDS} field names")
    reason_name = item.get("Reason", str(Reason.RULE_FAILED))
    reason = Reason(reason_name) if isinstance(reason_name, str) and reason_name in _REASON_NAMES else None
    if reason is None:
        raise fail(f"Reason must be one of {', '.join(sorted(RULE_REASONS))}")
    logic = item.get("Logic")
    if "Logic" not in item:
        raise fail("Logic is missing")
    _check_size(logic, where)
    issues = validate(logic)
    if issues:
        raise fail(f"Logic is not valid CertLogic: {issues[0]}")
    return Rule(identifier=match.group(0), type=rule_type, country=rule_country, version=version,
                certificate_type=certificate_type, valid_from=valid_from, valid_to=valid_to, logic=logic,
                reason=reason, description=_description(item.get("Description"), where), affected_fields=tuple(fields))


_VALUE_SET_VAR = "external.valueSets."


def _value_sets_read(logic: Any) -> set[str]:
    """The value sets ``logic`` reads: every ``{"var": "external.valueSets.<name>..."}`` in it."""
    names: set[str] = set()
    stack = [logic]
    while stack:  # iterative: the depth is bounded by _check_size already, but a loop costs nothing
        node = stack.pop()
        if isinstance(node, dict):
            path = node.get("var")
            if isinstance(path, str) and path.startswith(_VALUE_SET_VAR):
                names.add(path[len(_VALUE_SET_VAR):].split(".", 1)[0])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


def _malformed(where: str, problem: str) -> ListRefused:
    return ListRefused(ListOutcome.MALFORMED, f"{where}: {problem}")


def _semver(value: Any, where: str, name: str) -> tuple[int, int, int]:
    match = _SEMVER.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _malformed(where, f"{name} must be a version like 1.0.0")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _time(value: Any, where: str, name: str) -> float:
    """An ISO 8601 date-time with its offset, as the EU's rules write them ("2021-07-01T00:00:00Z")."""
    try:
        if not isinstance(value, str) or len(value) > 40 or "T" not in value:
            raise ValueError
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError
        return parsed.timestamp()
    except (ValueError, OverflowError):
        raise _malformed(where, f"{name} must be a date-time with its UTC offset, e.g. 2021-07-01T00:00:00Z") from None


def _description(value: Any, where: str) -> str:
    if (not isinstance(value, list) or not 0 < len(value) <= MAX_DESCRIPTIONS
            or not all(isinstance(entry, dict) and set(entry) == {"lang", "desc"} and isinstance(entry["lang"], str)
                       and _LANG.fullmatch(entry["lang"]) and _text(entry["desc"], MAX_TEXT_CHARS) for entry in value)):
        raise _malformed(where, f'Description must be 1 to {MAX_DESCRIPTIONS} objects {{"lang": "en", "desc": "..."}}')
    return str(next((entry["desc"] for entry in value if entry["lang"] == "en"), value[0]["desc"]))


def _check_size(logic: Any, where: str) -> None:
    """Bound one expression before the validator walks it (and long before a gate evaluates it)."""
    stack: list[tuple[Any, int]] = [(logic, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_LOGIC_NODES or depth > MAX_LOGIC_DEPTH:
            raise ListRefused(ListOutcome.TOO_LARGE,
                              f"{where}: Logic larger than {MAX_LOGIC_NODES} values or deeper than {MAX_LOGIC_DEPTH}")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Duplicate keys refused, as in CBOR: two readers keeping different duplicates would judge differently."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
