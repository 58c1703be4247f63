"""Revocation: the hashes (as the EU DCC revocation scheme defines them), the index, signed snapshots and
deltas on a gate, and real passes minted by ``qrgate_provisioning`` rejected as ``revoked`` by each hash type.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import zlib

import base45
import cbor2
import numpy as np
import pytest

from qrgate.passes.algorithms import BY_NAME, EDDSA, ES256, PS256
from qrgate.passes.revocation import (
    HASH_BYTES,
    HashType,
    RevocationIndex,
    RevocationList,
    country_uci_hash,
    decode_state,
    encode_state,
    pass_id_hash,
    signature_hash,
    uci_hash,
)
from qrgate.passes.signed_list import ListOutcome, ListType, SignerKeys
from qrgate.passes.trust import TrustedKey, TrustStore
from qrgate.passes.verdict import Reason
from qrgate.passes.verifier import PassVerifier
from qrgate.trust_updates import REVOCATION_FILE, REVOCATION_LAST_GOOD, TrustUpdates
from qrgate_provisioning.dcc_test_issuer import fake_vaccination_payload
from qrgate_provisioning.keys import IssuerKey, new_dcc_issuer_key, new_issuer_key
from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass, sign1
from qrgate_provisioning.trustlist import (
    build_revocation_delta,
    build_revocation_snapshot,
    new_list_signer,
    pass_hashes,
    public_pem,
)

NOW = 1_767_225_600
DAY = 86_400
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

LIST_KEY = new_list_signer("EdDSA")
STRANGER = new_list_signer("ES256")
WINDOW = {"not_before": dt.datetime(2025, 1, 1, tzinfo=dt.UTC), "not_after": dt.datetime(2028, 1, 1, tzinfo=dt.UTC)}
DCC_ES256 = new_dcc_issuer_key("VN", "ES256", **WINDOW)
DCC_PS256 = new_dcc_issuer_key("VN", "PS256", **WINDOW)
QG_EDDSA = new_issuer_key("VN-HN", "EdDSA")
QG_ES256 = new_issuer_key("VN-HN", "ES256")


def dcc(issuer: IssuerKey, uci: str) -> str:
    assert issuer.certificate is not None
    return mint_dcc_pass(issuer, issuer.certificate, fake_vaccination_payload(uci), NOW - 60, NOW + 30 * DAY)


def qg(issuer: IssuerKey, pass_id: bytes) -> str:
    return mint_qrgate_pass(issuer, "VN-HN", pass_id, "subj-9", NOW - 60, NOW + 30 * DAY)


def anchors() -> TrustStore:
    keys = [TrustedKey.from_certificate(i.certificate, "test") for i in (DCC_ES256, DCC_PS256) if i.certificate]
    keys += [TrustedKey(kid=i.kid, alg=BY_NAME[i.alg], public_key=i.private_key.public_key(), source="test")
             for i in (QG_EDDSA, QG_ES256)]
    return TrustStore(keys)


def gate(tmp_path) -> TrustUpdates:
    pins = tmp_path / "pins"
    pins.mkdir(exist_ok=True)
    (pins / "list.pem").write_bytes(public_pem(LIST_KEY))
    return TrustUpdates(tmp_path / "state", provisioned_signers=SignerKeys.from_pem_dir(pins), static_store=anchors())


def snapshot(version: int, entries: dict[HashType, list[bytes]], signer: IssuerKey = LIST_KEY,
             issued_at: int = NOW) -> bytes:
    return build_revocation_snapshot(signer, entries, version=version, issued_at=issued_at,
                                     expires_at=issued_at + 2 * DAY)


def delta(version: int, base: int, add: dict | None = None, remove: dict | None = None) -> bytes:
    return build_revocation_delta(LIST_KEY, base_version=base, add=add or {}, remove=remove or {},
                                  version=version, issued_at=NOW, expires_at=NOW + 2 * DAY)


def cose_signature(text: str) -> bytes:
    raw = base45.b45decode(text[4:])
    message = cbor2.loads(zlib.decompress(raw) if text.startswith("HC1:") else raw)
    return message.value[3]


# --- the hashes -------------------------------------------------------------------------------------------------------


def test_the_hashes_are_the_first_16_bytes_of_sha256_over_what_the_eu_scheme_names() -> None:
    uci = "URN:UVCI:01:VN:ABC123"
    assert uci_hash(uci) == hashlib.sha256(b"URN:UVCI:01:VN:ABC123").digest()[:16]
    assert country_uci_hash("VN", uci) == hashlib.sha256(b"VNURN:UVCI:01:VN:ABC123").digest()[:16]
    es256_signature = bytes(range(64))
    assert signature_hash(es256_signature, ES256) == hashlib.sha256(bytes(range(32))).digest()[:16]  # r only
    assert signature_hash(bytes(256), PS256) == hashlib.sha256(bytes(256)).digest()[:16]
    assert signature_hash(bytes(range(64)), EDDSA) == hashlib.sha256(bytes(range(64))).digest()[:16]
    assert pass_id_hash(b"\x01\x02") == hashlib.sha256(b"\x01\x02").digest()[:16]
    assert all(len(h) == HASH_BYTES for h in (uci_hash("x"), country_uci_hash("VN", "x"), pass_id_hash(b"x")))


def test_the_issuer_and_the_gate_hash_a_pass_the_same_way() -> None:
    uci = "URN:UVCI:01:VN:SAME0001"
    text = dcc(DCC_ES256, uci)
    assert pass_hashes(text) == {
        HashType.UCI: uci_hash(uci),
        HashType.COUNTRY_UCI: country_uci_hash("VN", uci),
        HashType.SIGNATURE: signature_hash(cose_signature(text), ES256),
    }
    qg_text = qg(QG_EDDSA, b"\xaa" * 16)
    assert pass_hashes(qg_text) == {HashType.QRGATE_PASS_ID: pass_id_hash(b"\xaa" * 16),
                                    HashType.SIGNATURE: signature_hash(cose_signature(qg_text), EDDSA)}
    with pytest.raises(ValueError, match="not an HC1: or QG1: pass"):
        pass_hashes("https://example.org")
    with pytest.raises(ValueError, match="not a readable pass"):
        pass_hashes("HC1:NOT-BASE45")


# --- the index --------------------------------------------------------------------------------------------------------


def test_the_index_finds_exactly_its_hashes_including_ones_with_nul_bytes_at_either_end() -> None:
    # numpy's S dtype drops trailing NULs when it hands out an element: these would be missed by a naive lookup.
    awkward = [b"\x00" * 16, b"\x01" + b"\x00" * 15, b"\x00" * 15 + b"\x01", b"\xff" * 16, b"ab" + b"\x00" * 14]
    near_misses = [b"\x01" + b"\x00" * 14 + b"\x01", b"\x00" * 14 + b"\x01\x00", b"ab" + b"\x00" * 13 + b"\x01",
                   b"\xff" * 15 + b"\xfe"]
    index = RevocationIndex.from_hashes({HashType.UCI: b"".join(awkward + awkward)})  # repeats are dropped
    assert len(index) == len(awkward) == index.count(HashType.UCI)
    assert all(index.contains(HashType.UCI, h) for h in awkward)
    assert not any(index.contains(HashType.UCI, h) for h in near_misses)
    assert not any(index.contains(HashType.SIGNATURE, h) for h in awkward)  # types are separate
    assert not RevocationIndex() and len(RevocationIndex()) == 0
    assert not RevocationIndex().contains(HashType.UCI, awkward[0])


def test_an_index_of_100k_hashes_has_every_one_and_nothing_else() -> None:
    rng = np.random.default_rng(3)
    data = rng.bytes(100_000 * HASH_BYTES)
    index = RevocationIndex.from_hashes({HashType.COUNTRY_UCI: data})
    assert index.count(HashType.COUNTRY_UCI) == 100_000 and index.nbytes == 100_000 * HASH_BYTES
    assert index.hashes(HashType.COUNTRY_UCI) == b"".join(sorted(data[i:i + 16] for i in range(0, len(data), 16)))
    assert all(index.contains(HashType.COUNTRY_UCI, data[i:i + 16]) for i in range(0, len(data), 16 * 97))
    absent = [rng.bytes(16) for _ in range(5_000)]
    assert not any(index.contains(HashType.COUNTRY_UCI, h) for h in absent)


def test_a_delta_removes_then_adds_and_means_the_same_applied_to_any_order() -> None:
    a, b, c, d = (bytes([n]) * 16 for n in (1, 2, 3, 4))
    index = RevocationIndex.from_hashes({HashType.UCI: a + b + c})
    changed = index.apply_delta(add={HashType.UCI: d + a, HashType.SIGNATURE: b},
                                remove={HashType.UCI: b + d + bytes(16)})
    assert changed.hashes(HashType.UCI) == a + c + d  # d removed (absent) then added; a added again: no repeat
    assert changed.hashes(HashType.SIGNATURE) == b
    assert index.hashes(HashType.UCI) == a + b + c  # the old index is untouched (the verifier may still hold it)


def test_the_state_file_round_trips_and_any_damage_is_detected() -> None:
    index = RevocationIndex.from_hashes({HashType.UCI: os.urandom(16 * 50), HashType.QRGATE_PASS_ID: os.urandom(16)})
    state = RevocationList(7, NOW, NOW + DAY, b"d" * 32, index)
    data = b"".join(bytes(chunk) for chunk in encode_state(state))
    loaded = decode_state(data)
    assert (loaded.version, loaded.issued_at, loaded.expires_at, loaded.digest) == (7, NOW, NOW + DAY, b"d" * 32)
    assert all(loaded.index.hashes(t) == index.hashes(t) for t in HashType)
    for damaged in (data[:-1], data[:40], data + b"\x00", data[:-5] + bytes([data[-5] ^ 1]) + data[-4:], b"",
                    b"QGREVOK1"):
        with pytest.raises(ValueError):
            decode_state(damaged)


# --- revoked passes, by every hash type -------------------------------------------------------------------------------

PASSES = {
    "dcc_es256": lambda: dcc(DCC_ES256, "URN:UVCI:01:VN:REVOKE-ES"),
    "dcc_ps256": lambda: dcc(DCC_PS256, "URN:UVCI:01:VN:REVOKE-PS"),
    "qrgate_eddsa": lambda: qg(QG_EDDSA, b"\x10" * 16),
    "qrgate_es256": lambda: qg(QG_ES256, b"\x20" * 16),
}
CASES = [
    ("dcc_es256", HashType.UCI), ("dcc_es256", HashType.COUNTRY_UCI), ("dcc_es256", HashType.SIGNATURE),
    ("dcc_ps256", HashType.UCI), ("dcc_ps256", HashType.COUNTRY_UCI), ("dcc_ps256", HashType.SIGNATURE),
    ("qrgate_eddsa", HashType.QRGATE_PASS_ID), ("qrgate_eddsa", HashType.SIGNATURE),
    ("qrgate_es256", HashType.QRGATE_PASS_ID), ("qrgate_es256", HashType.SIGNATURE),
]


@pytest.fixture(scope="module")
def minted() -> dict[str, str]:
    return {name: make() for name, make in PASSES.items()}


@pytest.mark.parametrize(("revoked", "hash_type"), CASES, ids=[f"{n}-{t}" for n, t in CASES])
def test_a_pass_revoked_by_one_hash_is_rejected_and_the_others_are_not(tmp_path, minted, revoked, hash_type) -> None:
    updates = gate(tmp_path)
    verifier = PassVerifier(updates.authority)
    assert all(verifier.verify(text, NOW).accepted for text in minted.values())
    decoy = {t: [hashlib.sha256(bytes([n])).digest()[:16] for n in range(50)] for t in HashType}  # other revocations

    entries = {t: decoy[t] + ([pass_hashes(minted[revoked])[hash_type]] if t is hash_type else []) for t in HashType}
    acceptance = updates.offer(snapshot(1, entries), "test", NOW, expect=ListType.REVOCATION)

    assert acceptance.accepted and updates.revocation_version == 1
    for name, text in minted.items():
        verdict = verifier.verify(text, NOW)
        if name == revoked:
            assert (verdict.reason, verdict.detail) == (Reason.REVOKED, "revocation_list")
            assert verdict.pass_id is not None and verdict.subject_id is None and verdict.initials is None
        else:
            assert verdict.reason is Reason.ACCEPTED, name


def test_an_es256_signature_with_s_negated_is_still_revoked(tmp_path) -> None:
    # ECDSA (r, s) and (r, n - s) both verify: hashing r alone is why the scheme still finds the pass.
    text = dcc(DCC_ES256, "URN:UVCI:01:VN:MALLEABLE")
    message = cbor2.loads(zlib.decompress(base45.b45decode(text[4:])))
    parts = list(message.value)
    r, s = parts[3][:32], int.from_bytes(parts[3][32:], "big")
    parts[3] = r + (P256_ORDER - s).to_bytes(32, "big")
    twin = "HC1:" + base45.b45encode(zlib.compress(cbor2.dumps(cbor2.CBORTag(18, parts)))).decode()
    updates = gate(tmp_path)
    assert PassVerifier(updates.authority).verify(twin, NOW).accepted  # a valid pass in its own right
    assert updates.offer(snapshot(1, {HashType.SIGNATURE: [pass_hashes(text)[HashType.SIGNATURE]]}),
                         "test", NOW).accepted
    assert PassVerifier(updates.authority).verify(twin, NOW).reason is Reason.REVOKED


def test_revoked_outranks_expired(tmp_path) -> None:
    assert DCC_ES256.certificate is not None
    text = mint_dcc_pass(DCC_ES256, DCC_ES256.certificate, fake_vaccination_payload("URN:UVCI:01:VN:OLD"),
                         NOW - 9 * DAY, NOW - DAY)
    updates = gate(tmp_path)
    assert PassVerifier(updates.authority).verify(text, NOW).reason is Reason.EXPIRED
    assert updates.offer(snapshot(1, {HashType.UCI: [uci_hash("URN:UVCI:01:VN:OLD")]}), "test", NOW).accepted
    assert PassVerifier(updates.authority).verify(text, NOW).reason is Reason.REVOKED


# --- snapshots, deltas, and refusals ----------------------------------------------------------------------------------


def test_a_delta_on_the_version_in_force_applies(tmp_path, minted) -> None:
    es, ps = pass_hashes(minted["dcc_es256"]), pass_hashes(minted["dcc_ps256"])
    updates = gate(tmp_path)
    verifier = PassVerifier(updates.authority)
    assert updates.offer(snapshot(1, {HashType.UCI: [es[HashType.UCI]]}), "test", NOW).accepted
    assert verifier.verify(minted["dcc_es256"], NOW).reason is Reason.REVOKED

    # Revoke the PS256 pass, lift the revocation of the ES256 one (revoked by mistake).
    acceptance = updates.offer(delta(2, 1, add={HashType.SIGNATURE: [ps[HashType.SIGNATURE]]},
                                     remove={HashType.UCI: [es[HashType.UCI]]}), "test", NOW)

    assert acceptance.accepted and updates.revocation_version == 2
    assert verifier.verify(minted["dcc_es256"], NOW).accepted
    assert verifier.verify(minted["dcc_ps256"], NOW).reason is Reason.REVOKED
    restarted = gate(tmp_path)  # the result is what is saved, not the delta
    assert restarted.revocation_version == 2
    assert PassVerifier(restarted.authority).verify(minted["dcc_ps256"], NOW).reason is Reason.REVOKED
    assert PassVerifier(restarted.authority).verify(minted["dcc_es256"], NOW).accepted


def test_a_delta_on_another_base_is_refused_and_a_snapshot_recovers(tmp_path, minted) -> None:
    qg_hashes = pass_hashes(minted["qrgate_eddsa"])
    updates = gate(tmp_path)
    first = delta(2, 1, add={HashType.QRGATE_PASS_ID: [qg_hashes[HashType.QRGATE_PASS_ID]]})
    assert updates.offer(first, "test", NOW).outcome is ListOutcome.BASE_MISMATCH  # nothing in force yet
    assert updates.offer(snapshot(3, {}), "test", NOW).accepted
    refused = updates.offer(delta(4, 2, add={HashType.QRGATE_PASS_ID: [qg_hashes[HashType.QRGATE_PASS_ID]]}),
                            "test", NOW)
    assert (refused.outcome, refused.list_type, refused.version) == (ListOutcome.BASE_MISMATCH, ListType.REVOCATION, 4)
    assert "v2" in (refused.detail or "") and "v3" in (refused.detail or "")
    assert (updates.revocation_version == 3
            and PassVerifier(updates.authority).verify(minted["qrgate_eddsa"], NOW).accepted)
    assert updates.offer(delta(4, 3, add={HashType.QRGATE_PASS_ID: [qg_hashes[HashType.QRGATE_PASS_ID]]}),
                         "test", NOW).accepted
    assert PassVerifier(updates.authority).verify(minted["qrgate_eddsa"], NOW).reason is Reason.REVOKED


@pytest.mark.parametrize(("make", "outcome"), [
    (lambda: snapshot(2, {}), ListOutcome.ROLLBACK),
    (lambda: snapshot(1, {HashType.UCI: [bytes(16)]}), ListOutcome.ROLLBACK),
    (lambda: snapshot(9, {}, signer=STRANGER), ListOutcome.UNKNOWN_SIGNER),
    (lambda: snapshot(9, {}, issued_at=NOW - 3 * DAY), ListOutcome.EXPIRED),
    (lambda: snapshot(9, {})[:-20], ListOutcome.MALFORMED),
    (lambda: b"garbage on the retained topic", ListOutcome.MALFORMED),
], ids=["same version", "older version", "wrong signer", "expired", "truncated", "garbage"])
def test_refused_revocation_lists_leave_the_one_in_force(tmp_path, make, outcome) -> None:
    updates = gate(tmp_path)
    assert updates.offer(snapshot(2, {HashType.UCI: [uci_hash("URN:UVCI:01:VN:KEEP")]}), "test", NOW).accepted
    state = updates.authority.state
    acceptance = updates.offer(make(), "mqtt", NOW, expect=ListType.REVOCATION)
    assert acceptance.outcome is outcome and acceptance.detail
    assert updates.authority.state is state and updates.revocation_version == 2


def test_a_revocation_list_is_not_accepted_on_the_trust_list_path(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(snapshot(1, {}), "mqtt", NOW, expect=ListType.TRUST_LIST).outcome is ListOutcome.WRONG_TYPE
    assert updates.revocation_version is None


def test_malformed_revocation_payloads_are_refused(tmp_path) -> None:
    def signed(**payload: object) -> bytes:
        base = {"type": "qrgate-revocation", "version": 5, "issued_at": NOW, "expires_at": NOW + DAY}
        return sign1(LIST_KEY, cbor2.dumps(base | payload), kid=LIST_KEY.kid)

    updates = gate(tmp_path)
    for document, detail in [
        (signed(kind="full"), "kind"),
        (signed(kind="snapshot", entries={"uci": b"\x00" * 15}), "multiple of 16"),
        (signed(kind="snapshot", entries={"name": b"\x00" * 16}), "unknown hash type"),
        (signed(kind="snapshot", entries=[b"\x00" * 16]), "map"),
        (signed(kind="snapshot", entries={}, extra=1), "unknown field"),
        (signed(kind="delta", add={}), "base_version"),
    ]:
        acceptance = updates.offer(document, "test", NOW)
        assert acceptance.outcome is ListOutcome.MALFORMED and detail in (acceptance.detail or ""), acceptance


def test_a_damaged_revocation_state_falls_back_to_the_last_good_one(tmp_path, caplog, minted) -> None:
    es = pass_hashes(minted["dcc_es256"])[HashType.UCI]
    ps = pass_hashes(minted["dcc_ps256"])[HashType.UCI]
    updates = gate(tmp_path)
    assert updates.offer(snapshot(1, {HashType.UCI: [es]}), "test", NOW).accepted
    assert updates.offer(snapshot(2, {HashType.UCI: [es, ps]}), "test", NOW).accepted
    current = tmp_path / "state" / REVOCATION_FILE
    current.write_bytes(current.read_bytes()[:-3])

    with caplog.at_level(logging.ERROR, logger="qrgate.trust_updates"):
        restarted = gate(tmp_path)

    assert str(current) in caplog.text and "truncated or damaged" in caplog.text
    assert restarted.revocation_version == 1
    verifier = PassVerifier(restarted.authority)
    assert verifier.verify(minted["dcc_es256"], NOW).reason is Reason.REVOKED
    assert verifier.verify(minted["dcc_ps256"], NOW).accepted
    (tmp_path / "state" / REVOCATION_LAST_GOOD).write_bytes(b"")
    assert gate(tmp_path).revocation_version is None  # both unusable: no revocation list, and the log says which
