"""A DCC test issuer for the demo and the tests: valid, expired, forged and untrusted ``HC1:`` passes.

Every holder is invented: the name reads "Nguyễn Thử Nghiệm" ("test" in Vietnamese) and the birth date
is a placeholder. The payloads are minimal valid DCC 1.3.0 certificates (vaccination, as Vietnam issues,
test and recovery), with the value-set codes of the EU DCC value sets; ``legacy_payload`` rewrites one
in the schema 1.0.x shape some real issuers still sign (``null`` groups, date-times for dates).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID, NameOID

from .keys import IssuerKey, generate_private_key, new_dcc_issuer_key
from .mint import mint_dcc_pass

DAY_S = 86_400
HOUR_S = 3_600
COVID_19 = "840539006"  # disease-agent-targeted
COMIRNATY = "EU/1/20/1528"  # vaccine-medicinal-product
PCR = "LP6464-4"  # test-type: nucleic acid amplification
RAPID_ANTIGEN = "LP217198-3"  # test-type: rapid immunoassay
NOT_DETECTED, DETECTED = "260415000", "260373001"  # test-result
MINISTRY = "Ministry of Health (qrgate test issuer)"
_HOLDER: dict[str, Any] = {
    "ver": "1.3.0",
    "nam": {"fn": "Nguyễn", "fnt": "NGUYEN", "gn": "Thử Nghiệm", "gnt": "THU<NGHIEM"},
    "dob": "1990-01-01",
}


def fake_vaccination_payload(
    certificate_id: str,
    *,
    country: str = "VN",
    vaccinated_on: str = "2021-10-01",
    dose: int = 2,
    doses: int = 2,
    product: str = COMIRNATY,
) -> dict[str, Any]:
    """A DCC 1.3.0 payload with one vaccination entry (Comirnaty, dose 2 of 2) for an invented holder."""
    return _HOLDER | {
        "v": [{
            "tg": COVID_19,
            "vp": "J07BX03",  # covid-19 vaccines
            "mp": product,
            "ma": "ORG-100030215",  # Biontech Manufacturing GmbH
            "dn": dose,
            "sd": doses,
            "dt": vaccinated_on,
            "co": country,
            "is": MINISTRY,
            "ci": certificate_id,
        }],
    }


def fake_test_payload(
    certificate_id: str, *, sampled_at: str, country: str = "VN", test_type: str = PCR, result: str = NOT_DETECTED
) -> dict[str, Any]:
    """A DCC 1.3.0 payload with one test entry; ``sampled_at`` is the sample's date-time (``sc``)."""
    entry: dict[str, Any] = {"tg": COVID_19, "tt": test_type, "sc": sampled_at, "tr": result,
                             "tc": "Trung tâm xét nghiệm thử", "co": country, "is": MINISTRY, "ci": certificate_id}
    if test_type == RAPID_ANTIGEN:
        entry["ma"] = "1232"  # a device of the EU common list (Abbott Panbio)
    else:
        entry["nm"] = "qrgate test PCR"
    return _HOLDER | {"t": [entry]}


def fake_recovery_payload(
    certificate_id: str, *, first_positive: str, valid_from: str, valid_until: str, country: str = "VN"
) -> dict[str, Any]:
    """A DCC 1.3.0 payload with one recovery entry (``fr``, ``df``, ``du`` are dates)."""
    return _HOLDER | {"r": [{"tg": COVID_19, "fr": first_positive, "df": valid_from, "du": valid_until,
                             "co": country, "is": MINISTRY, "ci": certificate_id}]}


def legacy_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` as some schema 1.0.x issuers sign it: ``null`` for the absent groups, date-times for dates.

    The dates ``dob``, ``dt``, ``df``, ``du`` and ``fr`` get a time of day and a zone, the way those issuers
    wrote them; ``sc`` (a date-time already) loses its zone, which some wrote too.
    """
    def widened(entry: dict[str, Any]) -> dict[str, Any]:
        entry = dict(entry)
        for name in ("dt", "df", "du", "fr"):
            if name in entry and len(entry[name]) == 10:
                entry[name] += "T10:00:00Z"
        if "sc" in entry:
            entry["sc"] = entry["sc"].removesuffix("Z")
        return entry

    legacy: dict[str, Any] = {**payload, "ver": "1.0.0", "dob": payload["dob"] + "T00:00:00"}
    for group in ("v", "t", "r"):
        legacy[group] = [widened(entry) for entry in payload[group]] if group in payload else None
    return legacy


def iso_date(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).date().isoformat()


def iso_time(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_certificate_id(country: str = "VN") -> str:
    """A fresh UVCI in the "URN:UVCI:01:<country>:<opaque>" form."""
    return f"URN:UVCI:01:{country}:{secrets.token_hex(10).upper()}"


def new_dcc_test_issuer(alg: str, now: float, *, country: str = "VN", valid_days: int = 365) -> IssuerKey:
    """A DCC signing key and self-signed certificate, valid from a day before ``now`` for ``valid_days``."""
    start = dt.datetime.fromtimestamp(now - DAY_S, dt.UTC)
    return new_dcc_issuer_key(country, alg, not_before=start, not_after=start + dt.timedelta(days=valid_days))


def new_dcc_test_issuer_with_eku(
    alg: str, now: float, purposes: Sequence[str], *, country: str | None = "VN", valid_days: int = 365
) -> IssuerKey:
    """A DCC test issuer whose certificate's Extended Key Usage lists exactly ``purposes`` (dotted OIDs).

    An empty ``purposes`` writes the empty SEQUENCE some real DSCs carry (the EU test set's CO15), which
    cryptography will not build as an ``ExtendedKeyUsage``: it goes in as the raw extension value.
    ``country`` None leaves the subject without a country.
    """
    private_key = generate_private_key(alg)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, "DSC (qrgate test issuer)")]
    if country is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.COUNTRY_NAME, country))
    name = x509.Name(attributes)
    start = dt.datetime.fromtimestamp(now - DAY_S, dt.UTC)
    usage: x509.ExtensionType = (
        x509.ExtendedKeyUsage([x509.ObjectIdentifier(oid) for oid in purposes]) if purposes
        else x509.UnrecognizedExtension(ExtensionOID.EXTENDED_KEY_USAGE, b"\x30\x00")  # SEQUENCE {}
    )
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=valid_days))
        .add_extension(usage, critical=False)
        .sign(private_key, hashes.SHA256())
    )
    return IssuerKey(issuer=country or "", alg=alg, private_key=private_key, certificate=certificate)


@dataclass(frozen=True)
class DccTestSet:
    """Passes signed by two trusted issuers (PS256 and ES256) and by one the gate does not know."""

    trusted: tuple[IssuerKey, ...]  # give a gate their certificates
    untrusted: IssuerKey
    passes: dict[str, str]  # case -> HC1 text; the cases are listed in ``dcc_test_set``


def dcc_test_set(now: float, *, country: str = "VN") -> DccTestSet:
    """One pass per case a gate must tell apart, valid (or not) at ``now``.

    valid_ps256, valid_es256: accepted. expired: exp a day before ``now``. not_yet_valid: iat a day
    after. forged: the ES256 issuer's kid, signed by another ES256 key. unknown_issuer: an untrusted issuer.
    Each is a complete vaccination given 60 days before ``now``, so the valid ones also pass the validation
    rules of the built-in rule set.
    """
    ps256 = new_dcc_test_issuer("PS256", now, country=country)
    es256 = new_dcc_test_issuer("ES256", now, country=country)
    stranger = new_dcc_test_issuer("ES256", now, country=country)
    iat, exp = int(now) - 3_600, int(now) + 180 * DAY_S

    def mint(key: IssuerKey, cert_of: IssuerKey, issued: int, expires: int) -> str:
        assert cert_of.certificate is not None
        payload = fake_vaccination_payload(new_certificate_id(country), country=country,
                                           vaccinated_on=iso_date(now - 60 * DAY_S))
        return mint_dcc_pass(key, cert_of.certificate, payload, issued, expires)

    passes = {
        "valid_ps256": mint(ps256, ps256, iat, exp),
        "valid_es256": mint(es256, es256, iat, exp),
        "expired": mint(ps256, ps256, int(now) - 200 * DAY_S, int(now) - DAY_S),
        "not_yet_valid": mint(es256, es256, int(now) + DAY_S, exp),
        "forged": mint(stranger, es256, iat, exp),
        "unknown_issuer": mint(stranger, stranger, iat, exp),
    }
    return DccTestSet(trusted=(ps256, es256), untrusted=stranger, passes=passes)


# Expected verdict per case of ``dcc_rule_cases`` under Vietnam's 2021-22 policy (the built-in rule set):
# fully vaccinated with an approved product, a negative PCR within 72 h or rapid test within 24 h,
# recovered within 180 days.
RULE_CASE_REASONS = {
    "vaccination_complete": "accepted",
    "test_negative_pcr": "accepted",
    "test_negative_rapid": "accepted",
    "recovery_valid": "accepted",
    "vaccination_incomplete": "vaccination_incomplete",
    "test_positive": "test_positive",
    "test_too_old_pcr": "test_too_old",
    "test_too_old_rapid": "test_too_old",
    "recovery_expired": "recovery_expired",
}


def dcc_rule_payloads(now: float, *, country: str = "VN") -> dict[str, dict[str, Any]]:
    """One genuine payload per case of ``RULE_CASE_REASONS``, dated relative to ``now``."""
    def uci() -> str:
        return new_certificate_id(country)

    def hours_ago(hours: float) -> str:
        return iso_time(now - hours * HOUR_S)

    def days_ago(days: float) -> str:
        return iso_date(now - days * DAY_S)

    return {
        "vaccination_complete": fake_vaccination_payload(uci(), country=country, vaccinated_on=days_ago(60)),
        "vaccination_incomplete": fake_vaccination_payload(uci(), country=country, vaccinated_on=days_ago(30), dose=1),
        "test_negative_pcr": fake_test_payload(uci(), country=country, sampled_at=hours_ago(24)),
        "test_negative_rapid": fake_test_payload(uci(), country=country, sampled_at=hours_ago(6),
                                                 test_type=RAPID_ANTIGEN),
        "test_positive": fake_test_payload(uci(), country=country, sampled_at=hours_ago(12), result=DETECTED),
        "test_too_old_pcr": fake_test_payload(uci(), country=country, sampled_at=hours_ago(96)),
        "test_too_old_rapid": fake_test_payload(uci(), country=country, sampled_at=hours_ago(30),
                                                test_type=RAPID_ANTIGEN),
        "recovery_valid": fake_recovery_payload(uci(), country=country, first_positive=days_ago(30),
                                                valid_from=days_ago(19), valid_until=days_ago(-150)),
        "recovery_expired": fake_recovery_payload(uci(), country=country, first_positive=days_ago(200),
                                                  valid_from=days_ago(189), valid_until=days_ago(20)),
    }


def dcc_rule_cases(issuer: IssuerKey, now: float, *, country: str = "VN") -> dict[str, str]:
    """``dcc_rule_payloads`` as HC1 texts signed by ``issuer``: genuine and in force at ``now``, so that only
    the validation rules tell them apart (issued an hour ago, valid for 30 days)."""
    assert issuer.certificate is not None
    iat, exp = int(now) - HOUR_S, int(now) + 30 * DAY_S
    return {case: mint_dcc_pass(issuer, issuer.certificate, payload, iat, exp)
            for case, payload in dcc_rule_payloads(now, country=country).items()}
