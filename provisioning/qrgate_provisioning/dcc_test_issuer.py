"""A DCC test issuer for the demo and the tests: valid, expired, forged and untrusted ``HC1:`` passes.

Every holder is invented: the name reads "Nguyễn Thử Nghiệm" ("test" in Vietnamese) and the birth date
is a placeholder. The payload is a minimal valid DCC 1.3.0 vaccination certificate, as Vietnam issues.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from .keys import IssuerKey, new_dcc_issuer_key
from .mint import mint_dcc_pass

DAY_S = 86_400


def fake_vaccination_payload(certificate_id: str, *, country: str = "VN", vaccinated_on: str = "2021-10-01") -> dict[str, Any]:
    """A DCC 1.3.0 payload with one vaccination entry (Comirnaty, dose 2 of 2) for an invented holder."""
    return {
        "ver": "1.3.0",
        "nam": {"fn": "Nguyễn", "fnt": "NGUYEN", "gn": "Thử Nghiệm", "gnt": "THU<NGHIEM"},
        "dob": "1990-01-01",
        "v": [{
            "tg": "840539006",  # COVID-19
            "vp": "J07BX03",  # covid-19 vaccines
            "mp": "EU/1/20/1528",  # Comirnaty
            "ma": "ORG-100030215",  # Biontech Manufacturing GmbH
            "dn": 2,
            "sd": 2,
            "dt": vaccinated_on,
            "co": country,
            "is": "Ministry of Health (qrgate test issuer)",
            "ci": certificate_id,
        }],
    }


def new_certificate_id(country: str = "VN") -> str:
    """A fresh UVCI in the "URN:UVCI:01:<country>:<opaque>" form."""
    return f"URN:UVCI:01:{country}:{secrets.token_hex(10).upper()}"


def new_dcc_test_issuer(alg: str, now: float, *, country: str = "VN", valid_days: int = 365) -> IssuerKey:
    """A DCC signing key and self-signed certificate, valid from a day before ``now`` for ``valid_days``."""
    start = dt.datetime.fromtimestamp(now - DAY_S, dt.timezone.utc)
    return new_dcc_issuer_key(country, alg, not_before=start, not_after=start + dt.timedelta(days=valid_days))


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
    """
    ps256 = new_dcc_test_issuer("PS256", now, country=country)
    es256 = new_dcc_test_issuer("ES256", now, country=country)
    stranger = new_dcc_test_issuer("ES256", now, country=country)
    iat, exp = int(now) - 3_600, int(now) + 180 * DAY_S

    def mint(key: IssuerKey, cert_of: IssuerKey, issued: int, expires: int) -> str:
        assert cert_of.certificate is not None
        payload = fake_vaccination_payload(new_certificate_id(country), country=country)
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
