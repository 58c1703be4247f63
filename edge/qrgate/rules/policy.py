"""The province's validation rules applied to one genuine DCC: which rules apply, the first that fails, its reason.

A signature proves who issued a certificate, not that it meets the province's policy: a correctly signed
positive test, or dose 1 of 2, is genuine and must still be red. ``RuleSet.judge`` answers that question
for a DCC whose signature, dates and revocation the verifier has already checked, from a rule set that
is data (``rule_set.py``): the built-in one (``data/rules-vn-2021.json``), a file, or a signed one the
province delivered (``trust_updates.py``).

Which rules apply, as the EU's verifier apps choose them:

- by certificate type: the rules of the payload's type (``v`` Vaccination, ``t`` Test, ``r`` Recovery)
  and the General ones;
- Acceptance rules are the rule set's country's (every one of them, ``rule_set.py`` checks);
  Invalidation rules apply to certificates issued by their Country (``country`` of ``judge``);
- of the versions of one Identifier, the newest whose ValidFrom..ValidTo holds ``at``; none: the rule
  does not apply (yet, or any more).

They are evaluated in a fixed order, Invalidation before Acceptance, General before the type's own,
then by Identifier (so the province orders its reasons by numbering its rules), and the first one that
does not give ``true`` decides the reason. An evaluation error (CertLogicError) counts as a failure, as
the CertLogic specification advises: a rule that cannot be evaluated on a certificate does not admit it.

Thread-safety: a RuleSet is never changed after it is built; the evaluation context is made per call.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import QrgateError
from ..passes.signed_list import ListRefused, SignerKeys, open_signed_list
from ..passes.verdict import Reason
from .certlogic import CertLogicError, evaluate
from .rule_set import (
    GENERAL,
    INVALIDATION,
    MAX_RULE_SET_DOCUMENT_BYTES,
    RECOVERY,
    TEST,
    VACCINATION,
    Rule,
    RuleSetContent,
    parse_content,
    read_rule_set,
)

log = logging.getLogger(__name__)

BUILTIN_RULE_SET = "rules-vn-2021.json"  # in qrgate/data/, shipped with the package

# DCC payload group -> certificate type, and the field that dates one entry (to pick the latest of several).
_GROUPS = (("v", VACCINATION, "dt"), ("t", TEST, "sc"), ("r", RECOVERY, "fr"))


class RuleSetError(QrgateError):
    """A rule-set file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What the rules say about one certificate."""

    reason: Reason  # Reason.ACCEPTED when every applicable rule passed
    rule_id: str | None  # the failing rule's Identifier, None when accepted
    depends_on_clock: bool  # the outcome used the validation clock (for the gate's clock-honesty policy)

    @property
    def accepted(self) -> bool:
        return self.reason is Reason.ACCEPTED


_NO_RULES = RuleOutcome(Reason.ACCEPTED, None, False)
_NOT_ONE_TYPE = RuleOutcome(Reason.CERTIFICATE_TYPE_NOT_ACCEPTED, None, False)


@dataclass(frozen=True, slots=True)
class _Identifier:
    """The versions of one rule Identifier, newest first."""

    invalidates: str | None  # for an Invalidation rule: the issuing country whose certificates it judges
    versions: tuple[Rule, ...]

    def in_force(self, at: float) -> Rule | None:
        for rule in self.versions:
            if rule.valid_from <= at <= rule.valid_to:
                return rule
        return None


class RuleSet:
    """An accepted rule set: immutable, thread-safe, judged once per presentation of a DCC."""

    __slots__ = ("_by_type", "_content", "_source", "_value_sets")

    def __init__(self, content: RuleSetContent, source: str) -> None:
        """``content`` as ``rule_set.py`` read it; ``source`` names it for logs ("built-in", a path, "signed v3")."""
        self._content = content
        self._source = source
        # Lists, not tuples: CertLogic's "in" takes a JSON array. Built once; evaluation only reads them.
        self._value_sets = {name: list(codes) for name, codes in content.value_sets.items()}
        grouped: dict[str, list[Rule]] = {}
        for rule in content.rules:
            grouped.setdefault(rule.identifier, []).append(rule)
        identifiers = sorted(grouped.items(), key=lambda item: (
            item[1][0].type != INVALIDATION, item[1][0].certificate_type != GENERAL, item[0]))
        self._by_type: dict[str, tuple[_Identifier, ...]] = {}
        for certificate_type in (VACCINATION, TEST, RECOVERY):
            self._by_type[certificate_type] = tuple(
                _Identifier(rules[0].country if rules[0].type == INVALIDATION else None,
                            tuple(sorted(rules, key=lambda rule: rule.version, reverse=True)))
                for _, rules in identifiers
                if {rule.certificate_type for rule in rules} & {GENERAL, certificate_type}
            )

    # --- what it is ---------------------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The signed version; 0 for the built-in set and for a JSON file (any signed one is newer)."""
        return self._content.version

    @property
    def issued_at(self) -> int:
        return self._content.issued_at

    @property
    def expires_at(self) -> int:
        return self._content.expires_at

    @property
    def country(self) -> str:
        return self._content.country

    @property
    def description(self) -> str | None:
        return self._content.description

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._content.rules

    @property
    def value_sets(self) -> Mapping[str, tuple[str, ...]]:
        return self._content.value_sets

    @property
    def digest(self) -> bytes | None:
        """SHA-256 of the signed document it came from; None for the built-in set or a JSON file."""
        return self._content.digest

    @property
    def signed(self) -> bool:
        return self._content.digest is not None

    @property
    def source(self) -> str:
        return self._source

    def age_s(self, now: float) -> float | None:
        """Seconds since a signed rule set was issued (0 while the clock is behind it); None if unsigned."""
        return None if not self.signed else max(0.0, now - self._content.issued_at)

    def __len__(self) -> int:
        return len(self._content.rules)

    def __repr__(self) -> str:
        return f"RuleSet({self._source}, {self.country}, v{self.version}, {len(self)} rules)"

    # --- the judgement -------------------------------------------------------------------------------------------

    def judge(self, payload: Mapping[str, Any], *, at: float, iat: int, exp: int, country: str | None) -> RuleOutcome:
        """The outcome of the applicable rules on a DCC ``payload`` (the hcert's JSON: ``ver``, ``v``/``t``/``r``, ...).

        ``at`` is the validation clock (epoch seconds), ``iat``/``exp`` the CWT's, ``country`` the issuing
        country (the CWT ``iss`` when it is a country code, else None). The rules read them as
        ``external.validationClock``, ``external.iat``, ``external.exp`` and ``external.issuerCountryCode``;
        ``external.countryCode`` is this rule set's country, ``external.valueSets`` its value sets.

        A payload that holds no group, or more than one (``v`` and ``t``), or a group that is not an array
        of entries, has no type the rules could judge: ``certificate_type_not_accepted``. A group of several
        entries is judged on its latest (by ``dt``, ``sc`` or ``fr``; the last one on a tie): the last dose
        decides, not the first. ``null`` and ``[]`` groups are absent (schema 1.0.x payloads write them).
        Never raises.
        """
        found = _certificate(payload)
        if found is None:
            return _NOT_ONE_TYPE
        certificate_type, payload = found
        candidates = self._by_type[certificate_type]
        if not candidates:
            return _NO_RULES
        data = {"payload": payload, "external": {
            "validationClock": _iso(at), "valueSets": self._value_sets, "countryCode": self._content.country,
            "issuerCountryCode": country, "iat": _iso(iat), "exp": _iso(exp),
        }}
        consulted = False  # whether a rule's validity window (so the clock) decided anything
        for candidate in candidates:
            if candidate.invalidates is not None and candidate.invalidates != country:
                continue
            consulted = True
            rule = candidate.in_force(at)
            if rule is not None and not _passes(rule, data):
                return RuleOutcome(rule.reason, rule.identifier, True)
        return RuleOutcome(Reason.ACCEPTED, None, True) if consulted else _NO_RULES


def _passes(rule: Rule, data: Mapping[str, Any]) -> bool:
    """Only ``true`` passes; false, any other value and an evaluation error fail (the spec's advice)."""
    try:
        return evaluate(rule.logic, data) is True
    except CertLogicError:
        return False
    except Exception:  # an evaluator fault on a hostile payload must fail closed, not end the gate
        log.exception("rule %s: the evaluator failed; the rule counts as failed", rule.label)
        return False


def _certificate(payload: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The certificate type and the payload to judge (with the latest entry of its group alone), or None."""
    found: tuple[str, str, str, list[Any]] | None = None
    for key, certificate_type, date_field in _GROUPS:
        entries = payload.get(key)
        if entries is None or (isinstance(entries, list) and not entries):
            continue
        if found is not None or not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            return None
        found = (key, certificate_type, date_field, entries)
    if found is None:
        return None
    key, certificate_type, date_field, entries = found
    if len(entries) > 1:
        latest = max(range(len(entries)), key=lambda i: (_date_key(entries[i].get(date_field)), i))
        payload = {**payload, key: [entries[latest]]}
    return certificate_type, payload


def _date_key(value: Any) -> str:
    """The date part of an ISO date or date-time, which sorts as text; anything else sorts first."""
    return value[:10] if isinstance(value, str) else ""


def _iso(epoch: float | None) -> str | None:
    """Epoch seconds as CertLogic's ``YYYY-MM-DDThh:mm:ssZ``; None when it is no representable time."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return None


# --- where rule sets come from ---------------------------------------------------------------------------------


@functools.cache
def builtin_rule_set() -> RuleSet:
    """The rule set shipped with the software: Vietnam's 2021-22 policy (docs/rules.md)."""
    text = resources.files("qrgate").joinpath("data", BUILTIN_RULE_SET).read_text(encoding="utf-8")
    try:
        return RuleSet(parse_content(text), "built-in")
    except ListRefused as refused:  # a packaging fault, never the province's: say so loudly
        raise RuleSetError(f"qrgate/data/{BUILTIN_RULE_SET}: {refused.outcome}: {refused.detail}") from None


def load_rule_set(path: str | Path, signers: SignerKeys | None = None) -> RuleSet:
    """A rule-set file: the JSON content (version 0), or a signed ``.cose`` document verified against ``signers``.

    For technicians (``qrgate verify --rules PATH``) and the gate's ``rules.baseline``. A signed one is
    checked as a gate checks a delivery (signature, type, every rule) except its version and expiry,
    which only matter against a rule set in force. Raises RuleSetError naming the file and the problem.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_RULE_SET_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise RuleSetError(f"{path}: cannot read the rule set: {exc.strerror or exc}") from None
    if len(data) > MAX_RULE_SET_DOCUMENT_BYTES:
        raise RuleSetError(f"{path}: larger than {MAX_RULE_SET_DOCUMENT_BYTES} bytes")
    try:
        if data.lstrip()[:1] == b"{":
            return RuleSet(parse_content(data), str(path))
        if signers is None:
            raise RuleSetError(f"{path}: a signed rule set, and no list keys were given to verify it")
        content = read_rule_set(open_signed_list(data, signers, MAX_RULE_SET_DOCUMENT_BYTES))
    except ListRefused as refused:
        raise RuleSetError(f"{path}: not a usable rule set: {refused.outcome}: {refused.detail}") from None
    return RuleSet(content, f"{path} (signed v{content.version})")
