"""Coverage-guided fuzzing of the gate's whole "QR text -> verdict" path, with atheris (libFuzzer).

One input is two bytes that choose the verification time (the gate's "now", or the validation clock
of one EU DCC test vector), then the QR text as UTF-8; bytes that are not UTF-8 become lone
surrogates, as a decoder may hand them over. Every input goes through ``PassVerifier.verify`` (a trust
store with real keys: the fuzz issuers' and every dcc-testdata signing certificate) and through the
CCCD reader with the policy on and off. libFuzzer reports as a crash, and saves the input, anything
that raises, hangs past ``-timeout`` or breaks one of these rules:

- ``verify`` returns a Verdict, and the CCCD reader None or a CccdResult, for every text;
- an accepted verdict is no forgery: its signed content (the protected header and the payload,
  which is all the signature covers) is content a key holder signed, i.e. that of a seed pass. A text
  that differs from every seed only in what the signature does not cover (the unprotected header,
  the CBOR tags around the message, the zlib stream) is a legitimate re-encoding and is counted, not
  failed; the signed content is read with the libraries alone (base45, zlib, cbor2), not qrgate's code;
- the CCCD reader only identifies a card when the policy is on, and returns nothing but a
  128-bit hash of it.

Seeds: passes minted here with fixed keys (so a crash input reproduces in any later run) and the PREFIX
of every dcc-testdata vector, each at its own validation clock. Run it for ten minutes with:

    .venv/bin/python tests/fuzz/fuzz_verify.py --seeds /tmp/qrgate-fuzz /tmp/qrgate-fuzz \
        -max_total_time=600 -max_len=4200 -timeout=10 -print_final_stats=1

``--seeds DIR`` writes the seed inputs into DIR first; the other arguments are libFuzzer's.
tests/test_fuzz_short.py runs it briefly; tests/test_verify_properties.py reuses the target and its
oracle under hypothesis.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FUZZING = __name__ == "__main__"
if FUZZING:
    import atheris  # only the fuzz run needs it: the tests import this module without it

# Coverage comes from instrumenting the Python code on the path; cbor2 and cryptography are native.
with atheris.instrument_imports(include=["qrgate", "base45"]) if FUZZING else contextlib.nullcontext():
    import base45
    import cbor2
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import NameOID

    from qrgate.errors import TrustStoreError
    from qrgate.passes.algorithms import BY_NAME
    from qrgate.passes.cccd import (
        IDENTIFIED,
        MALFORMED,
        UNSIGNED_PASS,
        CccdPolicy,
        CccdResult,
        looks_like_cccd,
        read_cccd,
    )
    from qrgate.passes.trust import TrustedKey, TrustStore
    from qrgate.passes.verdict import Verdict
    from qrgate.passes.verifier import PassVerifier
    from qrgate_provisioning.dcc_test_issuer import fake_vaccination_payload
    from qrgate_provisioning.keys import IssuerKey
    from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass

NOW = 1_767_225_600  # 2026-01-01 UTC: the fuzz passes are valid around it
DAY = 86_400
DCC_TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "dcc-testdata"
CCCD_ON = CccdPolicy(enabled=True, hash_key=hashlib.sha256(b"qrgate fuzz cccd key").digest())
CCCD_OFF = CccdPolicy()
TIME_INDEX_BYTES = 2


class AcceptedForgery(AssertionError):
    """The verifier accepted a text whose signed content no key holder signed."""


class BrokenContract(AssertionError):
    """A verifier or CCCD reader answer of the wrong type or shape."""


SignedContent = tuple[bytes, bytes]  # (protected header bytes, payload bytes): what a COSE_Sign1 signature covers


def signed_content(text: str) -> SignedContent | None:
    """The protected header and payload of a pass text, read with the libraries alone; None if unreadable."""
    prefix, body = text[:4], text[4:]
    if prefix not in ("HC1:", "QG1:"):
        return None
    try:
        data = base45.b45decode(body)
        if prefix == "HC1:":
            # Or sent uncompressed, left as it is (a COSE message never starts with a valid zlib header).
            with contextlib.suppress(zlib.error):
                data = zlib.decompress(data)
        item = cbor2.loads(data)
        while isinstance(item, cbor2.CBORTag) and item.tag in (61, 18):
            item = item.value
        protected, payload = item[0], item[2]
    except Exception:  # noqa: BLE001  (anything unreadable, whatever the libraries raise: the caller decides)
        return None
    return (protected, payload) if isinstance(protected, bytes) and isinstance(payload, bytes) else None


def fixed_scalar(label: str) -> int:
    return int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") >> 1  # 255 bits: below the P-256 order


def fixed_ed25519(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def _signing_certificate(subject_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A DCC signing certificate that is the same in every run (fixed serial, dates and an Ed25519 issuer):
    its kid, the hash of its DER, then never changes and a saved crash input reproduces."""
    issuer_key = fixed_ed25519("qrgate fuzz csca")
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "qrgate fuzz DSC")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(subject_key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        .sign(issuer_key, None)
    )


@dataclass(frozen=True)
class Target:
    verifier: PassVerifier
    times: tuple[float, ...]  # index 0 is NOW; the others are dcc-testdata validation clocks
    seeds: tuple[tuple[int, str], ...]  # (time index, text)
    genuine: frozenset[SignedContent]  # content a key holder signed: an accepted pass must carry one
    seed_texts: frozenset[str]


def _testdata_vectors() -> Iterator[tuple[dict, float]]:
    if not DCC_TESTDATA.is_dir():
        return
    for path in sorted(DCC_TESTDATA.rglob("*.json")):
        vector = json.loads(path.read_text())
        if not isinstance(vector.get("PREFIX"), str):
            continue
        clock = vector.get("TESTCTX", {}).get("VALIDATIONCLOCK")
        at = dt.datetime.fromisoformat(clock.replace("Z", "+00:00")).timestamp() if clock else NOW
        yield vector, at


@cache
def target() -> Target:
    """The verifier, times, seeds and oracle; built once per process."""
    qg_eddsa = IssuerKey("VN-HN", "EdDSA", fixed_ed25519("qrgate fuzz qg eddsa"))
    qg_es256 = IssuerKey("VN-HCM", "ES256", ec.derive_private_key(fixed_scalar("qrgate fuzz qg es256"), ec.SECP256R1()))
    stranger = IssuerKey("VN-HN", "EdDSA", fixed_ed25519("qrgate fuzz untrusted"))
    dsc_key = ec.derive_private_key(fixed_scalar("qrgate fuzz dsc"), ec.SECP256R1())
    dsc = IssuerKey("VN", "ES256", dsc_key, _signing_certificate(dsc_key))
    assert dsc.certificate is not None

    keys = [
        TrustedKey(kid=k.kid, alg=BY_NAME[k.alg], public_key=k.private_key.public_key(), source="fuzz", issuer=k.issuer)
        for k in (qg_eddsa, qg_es256)
    ]
    keys.append(TrustedKey.from_certificate(dsc.certificate, "fuzz"))

    payload = fake_vaccination_payload("URN:UVCI:01:VN:FUZZ0001")
    hc1 = mint_dcc_pass(dsc, dsc.certificate, payload, NOW - DAY, NOW + 300 * DAY)
    hc1_uncompressed = "HC1:" + base45.b45encode(zlib.decompress(base45.b45decode(hc1[4:]))).decode()
    minted_genuine = [
        mint_qrgate_pass(qg_eddsa, "VN-HN", b"\x01" * 16, "subject-eddsa", NOW - DAY, NOW + 30 * DAY, initials="NTN"),
        mint_qrgate_pass(qg_es256, "VN-HCM", b"\x02" * 16, "subject-es256", NOW - DAY, NOW + 30 * DAY),
        mint_qrgate_pass(qg_eddsa, "VN-HN", b"\x03" * 16, "subject-expired", NOW - 30 * DAY, NOW - DAY),
        hc1,
        hc1_uncompressed,
        mint_dcc_pass(dsc, dsc.certificate, payload, NOW - DAY, NOW + 300 * DAY, kid_in="unprotected"),
    ]
    minted_other = [
        mint_qrgate_pass(stranger, "VN-HN", b"\x04" * 16, "subject-stranger", NOW - DAY, NOW + 30 * DAY),
        "001090123456|012345678|Nguyễn Thử Nghiệm|01011990|Nam|Số 1 Phố Thử, Hà Nội|15042021",
        "079308123456||NGUYEN THU NGHIEM|29022008|Nữ|THON THU, THANH HOA|02012024",
        "https://example.com/not-a-pass",
    ]
    seeds: list[tuple[float, str]] = [(NOW, text) for text in minted_genuine + minted_other]
    genuine = {signed_content(text) for text in minted_genuine}

    for vector, at in _testdata_vectors():
        seeds.append((at, vector["PREFIX"]))
        certificate = vector.get("TESTCTX", {}).get("CERTIFICATE")
        if certificate:
            # The vectors that test a broken signing certificate: the gate refuses to trust it too.
            with contextlib.suppress(ValueError, TrustStoreError):
                keys.append(TrustedKey.from_certificate(x509.load_der_x509_certificate(base64.b64decode(certificate)),
                                                        "dcc-testdata"))
        if vector.get("EXPECTEDRESULTS", {}).get("EXPECTEDVERIFY") is not False:
            # An issuer's own pass (verification tested, or not the point of the vector); the few
            # vectors whose signature must fail are no one's signed content.
            genuine.add(signed_content(vector["PREFIX"]))
    genuine.discard(None)

    times = (float(NOW), *sorted({at for at, _ in seeds} - {float(NOW)}))
    index_of = {at: index for index, at in enumerate(times)}
    return Target(
        verifier=PassVerifier(TrustStore(keys)),
        times=times,
        seeds=tuple((index_of[at], text) for at, text in seeds),
        genuine=frozenset(genuine),  # type: ignore[arg-type]
        seed_texts=frozenset(text for _, text in seeds),
    )


def encode_input(time_index: int, text: str) -> bytes:
    return time_index.to_bytes(TIME_INDEX_BYTES, "big") + text.encode("utf-8", "surrogateescape")


def decode_input(data: bytes) -> tuple[float, str]:
    times = target().times
    at = times[int.from_bytes(data[:TIME_INDEX_BYTES], "big") % len(times)]
    return at, data[TIME_INDEX_BYTES:].decode("utf-8", "surrogateescape")


@dataclass
class Counts:
    accepted_seeds: int = 0
    accepted_reencodings: int = 0  # accepted, not a seed's text, but a seed's signed content


COUNTS = Counts()


def check(text: str, at: float) -> Verdict:
    """Run one text through the verifier and the CCCD reader; raise on any broken rule (see the module doc)."""
    t = target()
    verdict = t.verifier.verify(text, at)
    if not isinstance(verdict, Verdict):
        raise BrokenContract(f"verify returned {type(verdict).__name__}")
    if verdict.accepted:
        content = signed_content(text)
        if content not in t.genuine:
            raise AcceptedForgery(f"accepted {verdict.format} pass with unsigned content at {at}: {text!r}")
        if text in t.seed_texts:
            COUNTS.accepted_seeds += 1
        else:
            COUNTS.accepted_reencodings += 1
    check_cccd(text)
    return verdict


def check_cccd(text: str) -> None:
    """The CCCD reader with the policy on and off: None for a non-card, the right outcome for a card."""
    on, off = read_cccd(text, CCCD_ON), read_cccd(text, CCCD_OFF)
    if looks_like_cccd(text):
        if not (isinstance(on, CccdResult) and on.outcome in (IDENTIFIED, MALFORMED)):
            raise BrokenContract(f"CCCD reader (on) returned {on!r}")
        if off != CccdResult(UNSIGNED_PASS):
            raise BrokenContract(f"CCCD reader (off) returned {off!r}")
        if (on.identified != (on.subject_hash is not None)
                or (on.identified and len(bytes.fromhex(on.subject_hash)) != 16)):
            raise BrokenContract(f"CCCD result {on!r}")
    elif on is not None or off is not None:
        raise BrokenContract(f"CCCD reader read a text that is not a card: {on!r}, {off!r}")


def test_one_input(data: bytes) -> None:
    at, text = decode_input(data)
    before = COUNTS.accepted_reencodings
    check(text, at)
    if COUNTS.accepted_reencodings != before:
        print(f"accepted re-encoding #{COUNTS.accepted_reencodings} (same signed content as a seed)", file=sys.stderr)


def write_seeds(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for time_index, text in target().seeds:
        data = encode_input(time_index, text)
        (directory / f"seed-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
    return len(target().seeds)


def main(argv: list[str]) -> None:
    args = list(argv)
    if "--seeds" in args:
        at = args.index("--seeds")
        count = write_seeds(Path(args[at + 1]))
        del args[at:at + 2]
        print(f"wrote {count} seed inputs", file=sys.stderr)
    t = target()
    accepted = sum(t.verifier.verify(text, t.times[index]).accepted for index, text in t.seeds)
    print(f"{len(t.seeds)} seeds, {accepted} accepted at their own time; {len(t.genuine)} genuine signed contents",
          file=sys.stderr)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if FUZZING:
    main(sys.argv)
