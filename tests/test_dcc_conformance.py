"""EU DCC conformance: every vector of the public dgc-testdata set, each stage as its README defines it.

One test per JSON file (id = its path under dcc-testdata/). Each expected boolean the vector sets is
checked against the stage it names, on the vector's own intermediate fields, through the production
code (qrgate.passes, qrgate.decoding); a missing key means the vector does not test that stage:

- EXPECTEDUNPREFIX: the gate recognises PREFIX as an HC1 pass and what follows "HC1:" is BASE45
- EXPECTEDB45DECODE: BASE45 decodes to COMPRESSED
- EXPECTEDCOMPRESSION: COMPRESSED inflates (zlib) to COSE
- EXPECTEDVERIFY: COSE is signed by the key of TESTCTX.CERTIFICATE, found by kid
- EXPECTEDDECODE: the payload read out of COSE equals CBOR (NL and DE put the whole claims map in
  CBOR, the others the DCC payload: either matches, as in upstream's own test); without COSE, CBOR decodes
- EXPECTEDEXPIRATIONCHECK: at TESTCTX.VALIDATIONCLOCK the claims (iat, exp) are in force and the
  signing certificate is within its validity
- EXPECTEDKEYUSAGE: COSE verifies and the certificate's DCC Extended Key Usage allows its type (v/t/r)
- EXPECTEDPICTUREDECODE: the QR decoder reads PREFIX out of the PNG 2DCODE (zxing-cpp, then the
  production zxing + zbar chain if zxing alone reads nothing)

On top of the stages, the gate's own verdict on PREFIX must agree: accepted when every chain stage
the vector tests is expected to pass, rejected when one of them is expected to fail.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from cryptography import x509

from qrgate.commands import verify as verify_command
from qrgate.config import DecoderConfig
from qrgate.decoding.factory import build_decoder
from qrgate.errors import TrustStoreError
from qrgate.passes import cwt, dcc
from qrgate.passes.codec import decode_base45, decode_cbor, inflate
from qrgate.passes.cose import decode_sign1, verify_signature, verifying_keys
from qrgate.passes.rejection import Rejected
from qrgate.passes.trust import TrustedKey, TrustStore
from qrgate.passes.verdict import PassFormat, Reason
from qrgate.passes.verifier import DEFAULT_CLOCK_SKEW_S, PassVerifier

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "dcc-testdata"

if not DATA.is_dir():
    pytest.skip(f"EU DCC test data not found at {DATA} (the shared/ checkout next to the repository)",
                allow_module_level=True)

# Vectors whose expectation is wrong upstream: path -> (the stage, why). The test checks every other
# stage as usual and then raises UpstreamDeviation for this one, so the xfail covers exactly it, and
# strict=True turns an upstream fix (the stage agreeing again) into a failure to act on. Nothing else is skipped.
KNOWN_UPSTREAM_ERRORS = {
    "common/2DCode/raw/B1.json": (
        "EXPECTEDPICTUREDECODE",
        "expects the picture to decode but has no 2DCODE picture (the README makes 2DCode mandatory for it)",
    ),
}


class UpstreamDeviation(AssertionError):
    """A stage disagrees with a vector listed in KNOWN_UPSTREAM_ERRORS, as that entry says it will."""


STAGES = (
    "EXPECTEDUNPREFIX",
    "EXPECTEDB45DECODE",
    "EXPECTEDCOMPRESSION",
    "EXPECTEDVERIFY",
    "EXPECTEDDECODE",
    "EXPECTEDEXPIRATIONCHECK",
    "EXPECTEDKEYUSAGE",
    "EXPECTEDPICTUREDECODE",
)
# Stages on the way from PREFIX to a verdict. Compression is not one: the gate also reads an
# uncompressed HC1 (see qrgate.passes.dcc), while the stage asks whether COMPRESSED is zlib.
CHAIN_STAGES = ("EXPECTEDUNPREFIX", "EXPECTEDB45DECODE", "EXPECTEDVERIFY", "EXPECTEDEXPIRATIONCHECK",
                "EXPECTEDKEYUSAGE")


def _vectors() -> list[Any]:
    params = []
    for path in sorted(DATA.rglob("*.json")):
        vector = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(vector, dict) or not set(vector.get("EXPECTEDRESULTS", {})) & set(STAGES):
            continue  # e.g. the schema-only vectors (EXPECTEDSCHEMAVALIDATION): nothing here to test
        name = path.relative_to(DATA).as_posix()
        marks = ()
        if name in KNOWN_UPSTREAM_ERRORS:
            stage, reason = KNOWN_UPSTREAM_ERRORS[name]
            marks = (pytest.mark.xfail(strict=True, raises=UpstreamDeviation, reason=f"{stage}: {reason}"),)
        params.append(pytest.param(vector, id=name, marks=marks))
    return params


VECTORS = _vectors()


def test_the_known_upstream_errors_are_vectors_of_the_set() -> None:
    assert set(KNOWN_UPSTREAM_ERRORS) <= {param.id for param in VECTORS}
    assert all(stage in STAGES for stage, _ in KNOWN_UPSTREAM_ERRORS.values())


# --- the stages -----------------------------------------------------------------------------------------


def _hex(vector: Mapping[str, Any], field: str) -> bytes:
    return bytes.fromhex(vector[field])


def validation_clock(vector: Mapping[str, Any]) -> float:
    clock = datetime.fromisoformat(vector["TESTCTX"]["VALIDATIONCLOCK"].replace("Z", "+00:00"))
    return (clock if clock.tzinfo else clock.replace(tzinfo=UTC)).timestamp()  # NL gives no zone: UTC


def signer(vector: Mapping[str, Any]) -> TrustedKey:
    der = base64.b64decode(vector["TESTCTX"]["CERTIFICATE"])
    return TrustedKey.from_certificate(x509.load_der_x509_certificate(der), "TESTCTX.CERTIFICATE")


def unprefix(vector: Mapping[str, Any]) -> bool:
    text = vector["PREFIX"]
    recognised = PassVerifier(TrustStore()).verify(text, 0).format is PassFormat.DCC
    return recognised and text[len(dcc.PREFIX):] == vector["BASE45"]


def b45decode(vector: Mapping[str, Any]) -> bool:
    return decode_base45(vector["BASE45"]) == _hex(vector, "COMPRESSED")


def compression(vector: Mapping[str, Any]) -> bool:
    return inflate(_hex(vector, "COMPRESSED")) == _hex(vector, "COSE")


def verify(vector: Mapping[str, Any]) -> bool:
    sign1 = decode_sign1(_hex(vector, "COSE"))
    verify_signature(sign1, TrustStore([signer(vector)]).keys_for(sign1.kid))
    return True


def decode(vector: Mapping[str, Any]) -> bool:
    expected = decode_cbor(_hex(vector, "CBOR"))
    if "COSE" not in vector:
        return isinstance(expected, Mapping)
    claims = cwt.decode_claims(decode_sign1(_hex(vector, "COSE")).payload)
    return expected in (dcc.hcert_payload(claims), claims)


def expiration_check(vector: Mapping[str, Any]) -> bool:
    at = validation_clock(vector)
    claims = cwt.decode_claims(decode_sign1(_hex(vector, "COSE")).payload)
    in_force = cwt.time_verdict(*cwt.validity(claims), at, DEFAULT_CLOCK_SKEW_S) is Reason.ACCEPTED
    return in_force and signer(vector).usable(PassFormat.DCC, at)


def key_usage(vector: Mapping[str, Any]) -> bool:
    sign1 = decode_sign1(_hex(vector, "COSE"))
    keys = verifying_keys(sign1, [signer(vector)])
    dcc.read_contents(cwt.decode_claims(sign1.payload), keys)  # raises Rejected(UNKNOWN_ISSUER, "key_usage")
    return True


@cache
def _zxing():
    return build_decoder(DecoderConfig(fallback="none"))


@cache
def _production_decoder():
    return build_decoder()  # the gate's default: zxing-cpp, with zbar for codes zxing locates but cannot read


def picture_decode(vector: Mapping[str, Any]) -> bool:
    png = np.frombuffer(base64.b64decode(vector["2DCODE"]), np.uint8)
    grey = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        return False
    texts = [code.text for code in _zxing().decode(grey)] or [code.text for code in _production_decoder().decode(grey)]
    return vector["PREFIX"] in texts


STAGE_CHECKS: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "EXPECTEDUNPREFIX": unprefix,
    "EXPECTEDB45DECODE": b45decode,
    "EXPECTEDCOMPRESSION": compression,
    "EXPECTEDVERIFY": verify,
    "EXPECTEDDECODE": decode,
    "EXPECTEDEXPIRATIONCHECK": expiration_check,
    "EXPECTEDKEYUSAGE": key_usage,
    "EXPECTEDPICTUREDECODE": picture_decode,
}


# The fields each stage reads; a vector without one cannot pass that stage.
STAGE_INPUTS = {
    "EXPECTEDUNPREFIX": ("PREFIX", "BASE45"),
    "EXPECTEDB45DECODE": ("BASE45", "COMPRESSED"),
    "EXPECTEDCOMPRESSION": ("COMPRESSED", "COSE"),
    "EXPECTEDVERIFY": ("COSE",),
    "EXPECTEDDECODE": ("CBOR",),
    "EXPECTEDEXPIRATIONCHECK": ("COSE",),
    "EXPECTEDKEYUSAGE": ("COSE",),
    "EXPECTEDPICTUREDECODE": ("2DCODE", "PREFIX"),
}


def passes(stage: str, vector: Mapping[str, Any]) -> bool:
    """Whether ``stage`` succeeds on ``vector``; a rejection or an unusable certificate is a failure."""
    if not all(field in vector for field in STAGE_INPUTS[stage]):
        return False
    try:
        return STAGE_CHECKS[stage](vector)
    except (Rejected, TrustStoreError):
        return False


# --- the test -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS)
def test_vector(vector: Mapping[str, Any], request: pytest.FixtureRequest) -> None:
    expected = {stage: value for stage, value in vector["EXPECTEDRESULTS"].items() if stage in STAGES}
    actual = {stage: passes(stage, vector) for stage in expected}
    known_error = KNOWN_UPSTREAM_ERRORS.get(request.node.callspec.id)
    deviating = {known_error[0]} if known_error else set()
    assert {s: v for s, v in actual.items() if s not in deviating} == {
        s: v for s, v in expected.items() if s not in deviating
    }

    # A known upstream error on a chain stage leaves no expectation for the verdict.
    chain = {stage: expected[stage] for stage in CHAIN_STAGES if stage in expected}
    if chain and not deviating & set(CHAIN_STAGES):
        try:
            trust = TrustStore([signer(vector)])
        except TrustStoreError:
            trust = TrustStore()
        verdict = PassVerifier(trust).verify(vector["PREFIX"], validation_clock(vector))
        assert verdict.accepted == all(chain.values()), verdict
        if verdict.accepted:
            assert verdict.format is PassFormat.DCC and verdict.pass_id and verdict.kid

    for stage in deviating:
        if actual[stage] != expected[stage]:
            raise UpstreamDeviation(f"{stage}: expected {expected[stage]}, got {actual[stage]}")


# --- the same verdicts through `qrgate verify` ---------------------------------------------------------------------


def cli_exit_code(vector: Mapping[str, Any], directory: Path) -> int:
    """``qrgate verify --trust <TESTCTX.CERTIFICATE> --at <VALIDATIONCLOCK> PREFIX``'s exit code, run in-process.

    A certificate the gate cannot load as a trust anchor leaves the command without ``--trust``, as
    test_vector falls back to an empty trust store: the pass is then from an unknown issuer.
    """
    argv = ["--at", vector["TESTCTX"]["VALIDATIONCLOCK"], vector["PREFIX"]]
    if "CERTIFICATE" in vector.get("TESTCTX", {}):
        certificate = directory / "signer.der"
        certificate.write_bytes(base64.b64decode(vector["TESTCTX"]["CERTIFICATE"]))
        try:
            TrustStore.from_paths([certificate])
            argv = ["--trust", str(certificate), *argv]
        except TrustStoreError:
            pass
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = verify_command.main(argv)
    report = json.loads(out.getvalue())
    assert report["verdict"] == ("accepted" if code == verify_command.EXIT_ACCEPTED else "rejected")
    return code


# Every vector with an expectation on the verdict; the marks of VECTORS are left behind (B1's xfail is about its
# picture, which the command does not read).
CLI_VECTORS = [pytest.param(param.values[0], id=param.id) for param in VECTORS
               if set(param.values[0]["EXPECTEDRESULTS"]) & set(CHAIN_STAGES)
               and "PREFIX" in param.values[0] and "VALIDATIONCLOCK" in param.values[0].get("TESTCTX", {})]


def test_every_vector_with_a_verdict_expectation_is_run_through_the_command() -> None:
    with_chain = [p for p in VECTORS if set(p.values[0]["EXPECTEDRESULTS"]) & set(CHAIN_STAGES)]
    assert len(CLI_VECTORS) == len(with_chain) > 300


@pytest.mark.parametrize("vector", CLI_VECTORS)
def test_the_verify_command_agrees_with_the_vector(vector: Mapping[str, Any], tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    known_error = KNOWN_UPSTREAM_ERRORS.get(request.node.callspec.id)
    if known_error and known_error[0] in CHAIN_STAGES:
        pytest.skip(f"{known_error[0]}: {known_error[1]}")  # no expectation for the verdict, as in test_vector
    chain = [vector["EXPECTEDRESULTS"][stage] for stage in CHAIN_STAGES if stage in vector["EXPECTEDRESULTS"]]
    expected = verify_command.EXIT_ACCEPTED if all(chain) else verify_command.EXIT_REJECTED
    assert cli_exit_code(vector, tmp_path) == expected
