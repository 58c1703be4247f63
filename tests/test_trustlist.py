"""Signed trust lists on a gate: what is accepted, what is refused (and that the list in force stays),
key removal, rotation of the pinned list key, start-up from damaged files, and the staleness policy.

Every list is built and signed by ``qrgate_provisioning.trustlist`` and every pass minted by
``qrgate_provisioning.mint``; the gate side is the real ``TrustUpdates`` on a temporary state directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrgate.errors import TrustStoreError
from qrgate.passes.algorithms import BY_NAME
from qrgate.passes.authority import StalePolicy, TrustState
from qrgate.passes.signed_list import ListOutcome, ListType, SignerKeys
from qrgate.passes.trust import TrustedKey, TrustStore
from qrgate.passes.trust_list import MAX_KEYS
from qrgate.passes.verdict import PassFormat, Reason
from qrgate.passes.verifier import PassVerifier
from qrgate.trust_updates import (
    SIGNERS_FILE,
    TRUST_LIST_FILE,
    TRUST_LIST_LAST_GOOD,
    TrustUpdates,
)
from qrgate_provisioning.dcc_test_issuer import fake_vaccination_payload
from qrgate_provisioning.keys import IssuerKey, new_dcc_issuer_key, new_issuer_key
from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass, sign1
from qrgate_provisioning.trustlist import (
    build_revocation_snapshot,
    build_trust_list,
    certificate_entry,
    key_entry,
    new_list_signer,
    public_pem,
    spki,
)

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
HOUR = 3_600
DAY = 86_400

# List keys: the one provisioned on the gates, its successor, and one the gates never pinned.
OLD = new_list_signer("ES256")
NEW = new_list_signer("EdDSA")
STRANGER = new_list_signer("EdDSA")
# Pass issuers.
HANOI = new_issuer_key("VN-HN", "EdDSA")
HUE = new_issuer_key("VN-HUE", "ES256")
STATIC = new_issuer_key("VN-STATIC", "EdDSA")  # only in the configuration's static anchors
DCC = new_dcc_issuer_key("VN", "ES256", not_before=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
                         not_after=dt.datetime(2028, 1, 1, tzinfo=dt.UTC))


def trusted(issuer: IssuerKey) -> TrustedKey:
    return TrustedKey(kid=issuer.kid, alg=BY_NAME[issuer.alg], public_key=issuer.private_key.public_key(),
                      source="test", issuer=issuer.issuer)


def entry(issuer: IssuerKey) -> dict:
    return key_entry(trusted(issuer))


def trust_list(version: int, *issuers: IssuerKey, signer: IssuerKey = OLD, issued_at: int = NOW,
               valid_s: int = 7 * DAY, next_signers: tuple[IssuerKey, ...] = ()) -> bytes:
    return build_trust_list(signer, [entry(i) for i in issuers], version=version, issued_at=issued_at,
                            expires_at=issued_at + valid_s, next_signers=[spki(k) for k in next_signers])


def qg_pass(issuer: IssuerKey, pass_id: bytes = b"\x07" * 16) -> str:
    return mint_qrgate_pass(issuer, issuer.issuer, pass_id, "subj-1", NOW - 60, NOW + 30 * DAY)


def pins_dir(tmp_path: Path, *keys: IssuerKey) -> Path:
    directory = tmp_path / "pins"
    directory.mkdir(exist_ok=True)
    for index, key in enumerate(keys):
        (directory / f"list-{index}.pem").write_bytes(public_pem(key))
    return directory


def gate(tmp_path: Path, *, static: tuple[IssuerKey, ...] = (STATIC,),
         pins: tuple[IssuerKey, ...] = (OLD,)) -> TrustUpdates:
    """A gate's list state as the daemon opens it: the same state directory every time it is called."""
    return TrustUpdates(tmp_path / "state", provisioned_signers=SignerKeys.from_pem_dir(pins_dir(tmp_path, *pins)),
                        static_store=TrustStore(trusted(i) for i in static))


def reason(updates: TrustUpdates, text: str, at: float = NOW) -> Reason:
    return PassVerifier(updates.authority).verify(text, at).reason


# --- accepted ----------------------------------------------------------------------------------------------------


def test_a_valid_list_is_accepted_saved_and_replaces_the_static_anchors(tmp_path) -> None:
    updates = gate(tmp_path)
    assert (updates.version, updates.issued_at, updates.age_s(NOW)) == (None, None, None)
    assert (reason(updates, qg_pass(STATIC)) is Reason.ACCEPTED
            and reason(updates, qg_pass(HANOI)) is Reason.UNKNOWN_ISSUER)

    document = trust_list(1, HANOI, HUE)
    acceptance = updates.offer(document, "test", NOW + 60)

    assert acceptance.accepted and (acceptance.list_type, acceptance.version) == (ListType.TRUST_LIST, 1)
    assert (updates.version, updates.issued_at, updates.age_s(NOW + 60)) == (1, NOW, 60)
    assert reason(updates, qg_pass(HANOI)) is Reason.ACCEPTED and reason(updates, qg_pass(HUE)) is Reason.ACCEPTED
    # The list is the only source of keys once in force: the static anchor is no longer trusted.
    assert reason(updates, qg_pass(STATIC)) is Reason.UNKNOWN_ISSUER
    assert (tmp_path / "state" / TRUST_LIST_FILE).read_bytes() == document


def test_the_same_document_again_is_unchanged_not_a_rollback(tmp_path) -> None:
    document = trust_list(1, HANOI)
    updates = gate(tmp_path)
    assert updates.offer(document, "mqtt", NOW).accepted
    state = updates.authority.state
    assert updates.offer(document, "mqtt", NOW).outcome is ListOutcome.UNCHANGED
    # After a restart too: a retained message is delivered again on every reconnect.
    assert gate(tmp_path).offer(document, "mqtt", NOW).outcome is ListOutcome.UNCHANGED
    assert updates.authority.state is state


def test_certificates_in_the_list_are_dcc_signing_certificates(tmp_path) -> None:
    assert DCC.certificate is not None
    document = build_trust_list(OLD, [certificate_entry(DCC.certificate)], version=1, issued_at=NOW,
                                expires_at=NOW + DAY)
    updates = gate(tmp_path)
    assert updates.offer(document, "test", NOW).accepted
    (key,) = updates.authority.state.store
    assert (key.kid, key.formats) == (DCC.kid, {PassFormat.DCC})
    hc1 = mint_dcc_pass(DCC, DCC.certificate, fake_vaccination_payload("URN:UVCI:01:VN:TL1"), NOW - 60, NOW + DAY)
    assert reason(updates, hc1) is Reason.ACCEPTED


def test_entry_windows_and_formats_are_applied(tmp_path) -> None:
    limited = entry(HANOI) | {"not_before": NOW - DAY, "not_after": NOW + HOUR, "formats": ["dcc"]}
    windowed = entry(HUE) | {"not_after": NOW + HOUR}
    document = build_trust_list(OLD, [limited, windowed], version=1, issued_at=NOW, expires_at=NOW + DAY)
    updates = gate(tmp_path)
    assert updates.offer(document, "test", NOW).accepted
    assert reason(updates, qg_pass(HANOI)) is Reason.UNKNOWN_ISSUER  # a DCC-only key cannot sign a qrgate pass
    assert reason(updates, qg_pass(HUE)) is Reason.ACCEPTED
    assert reason(updates, qg_pass(HUE), NOW + 2 * HOUR) is Reason.UNKNOWN_ISSUER  # outside the key's window


# --- refused, and the list in force stays -------------------------------------------------------------------------


def signed_payload(payload: dict, signer: IssuerKey = OLD) -> bytes:
    """A list signed by ``signer`` with any payload at all: for payloads the issuer's builder refuses to make."""
    return sign1(signer, cbor2.dumps(payload), kid=hashlib.sha256(spki(signer)).digest()[:8])


def valid_payload(**changes: object) -> dict:
    payload = {"type": "qrgate-trust-list", "version": 5, "issued_at": NOW, "expires_at": NOW + DAY,
               "keys": [entry(HUE)], "signers": [spki(OLD)]}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def refusals() -> list[tuple[str, object, ListOutcome]]:
    v3 = trust_list(3, HUE)
    return [
        ("wrong signer", trust_list(5, HUE, signer=STRANGER), ListOutcome.UNKNOWN_SIGNER),
        ("the next key before it is pinned", trust_list(5, HUE, signer=NEW), ListOutcome.UNKNOWN_SIGNER),
        ("older version", trust_list(1, HUE), ListOutcome.ROLLBACK),
        ("same version, other content", trust_list(2, HUE), ListOutcome.ROLLBACK),
        ("expired", trust_list(5, HUE, issued_at=NOW - 8 * DAY), ListOutcome.EXPIRED),
        ("truncated", v3[: len(v3) // 2], ListOutcome.MALFORMED),
        ("last byte cut", v3[:-1], ListOutcome.MALFORMED),
        ("garbage", b"\x9f\xff garbage \x00" * 40, ListOutcome.MALFORMED),
        ("empty", b"", ListOutcome.MALFORMED),
        ("json", b'{"type": "qrgate-trust-list", "version": 9}', ListOutcome.MALFORMED),
        ("signature changed", v3[:-1] + bytes([v3[-1] ^ 1]), ListOutcome.BAD_SIGNATURE),
        ("a revocation list", build_revocation_snapshot(OLD, {}, version=9, issued_at=NOW, expires_at=NOW + DAY),
         ListOutcome.WRONG_TYPE),
        ("another type", signed_payload(valid_payload(type="qrgate-config")), ListOutcome.WRONG_TYPE),
        ("does not name its signer", signed_payload(valid_payload(signers=[spki(NEW)])), ListOutcome.SIGNER_NOT_LISTED),
        ("no signers", signed_payload(valid_payload(signers=[])), ListOutcome.MALFORMED),
        ("version as text", signed_payload(valid_payload(version="5")), ListOutcome.MALFORMED),
        ("version true", signed_payload(valid_payload(version=True)), ListOutcome.MALFORMED),
        ("expires before issued", signed_payload(valid_payload(expires_at=NOW - 1)), ListOutcome.MALFORMED),
        ("unknown field", signed_payload(valid_payload(comment="x")), ListOutcome.MALFORMED),
        ("keys not an array", signed_payload(valid_payload(keys={"a": 1})), ListOutcome.MALFORMED),
        ("key with both forms", signed_payload(valid_payload(keys=[entry(HUE) | {"certificate": b"x"}])),
         ListOutcome.MALFORMED),
        ("key alg mismatch", signed_payload(valid_payload(keys=[entry(HUE) | {"alg": "EdDSA"}])),
         ListOutcome.MALFORMED),
        ("key not DER", signed_payload(valid_payload(keys=[entry(HUE) | {"public_key": b"\x30\x00"}])),
         ListOutcome.MALFORMED),
        ("key unknown field", signed_payload(valid_payload(keys=[entry(HUE) | {"usage": "all"}])),
         ListOutcome.MALFORMED),
        ("too many keys", signed_payload(valid_payload(keys=[{}] * (MAX_KEYS + 1))), ListOutcome.TOO_LARGE),
        ("a pass, not a list", qg_pass(HANOI).encode(), ListOutcome.MALFORMED),
    ]


@pytest.mark.parametrize(("case", "document", "outcome"), refusals(), ids=[case for case, _, _ in refusals()])
def test_refused_lists_name_the_reason_and_change_nothing(tmp_path, case, document, outcome) -> None:
    updates = gate(tmp_path)
    assert updates.offer(trust_list(2, HANOI), "test", NOW).accepted
    state, pinned = updates.authority.state, updates.pinned_signers
    files = {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir()}

    acceptance = updates.offer(document, "mqtt:test", NOW, expect=ListType.TRUST_LIST)

    assert acceptance.outcome is outcome, acceptance.detail
    assert not acceptance.accepted and acceptance.detail
    assert updates.authority.state is state and updates.pinned_signers == pinned
    assert {p.name: p.read_bytes() for p in (tmp_path / "state").iterdir()} == files
    assert reason(updates, qg_pass(HANOI)) is Reason.ACCEPTED and reason(updates, qg_pass(HUE)) is Reason.UNKNOWN_ISSUER


def test_a_list_too_large_is_refused_before_it_is_read(tmp_path) -> None:
    updates = gate(tmp_path)
    acceptance = updates.offer(b"\x00" * (9 * 1024 * 1024), "test", NOW, expect=ListType.TRUST_LIST)
    assert acceptance.outcome is ListOutcome.TOO_LARGE


VALID_V1 = trust_list(1, HANOI)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_no_damaged_copy_of_a_signed_list_is_accepted_and_nothing_raises(tmp_path_factory, data) -> None:
    updates = gate(tmp_path_factory.mktemp("fuzz"))
    document = bytearray(VALID_V1)
    for position in data.draw(st.sets(st.integers(0, len(document) - 1), min_size=1, max_size=4)):
        document[position] ^= data.draw(st.integers(1, 255))
    acceptance = updates.offer(bytes(document), "fuzz", NOW)
    assert not acceptance.accepted and acceptance.detail
    assert updates.version is None


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused_without_raising(tmp_path_factory, garbage) -> None:
    updates = gate(tmp_path_factory.mktemp("garbage"))
    assert not updates.offer(garbage, "fuzz", NOW).accepted


# --- removing a key -----------------------------------------------------------------------------------------------


def test_a_key_removed_from_the_list_stops_its_passes_after_one_update(tmp_path) -> None:
    updates = gate(tmp_path)
    verifier = PassVerifier(updates.authority)  # built once, as the daemon does: it must see the update
    hue_pass = qg_pass(HUE)
    assert updates.offer(trust_list(1, HANOI, HUE), "test", NOW).accepted
    assert verifier.verify(hue_pass, NOW).reason is Reason.ACCEPTED

    assert updates.offer(trust_list(2, HANOI), "test", NOW).accepted

    assert verifier.verify(hue_pass, NOW).reason is Reason.UNKNOWN_ISSUER
    assert verifier.verify(qg_pass(HANOI), NOW).reason is Reason.ACCEPTED
    assert gate(tmp_path).version == 2  # and it stays removed after a restart
    assert reason(gate(tmp_path), hue_pass) is Reason.UNKNOWN_ISSUER


def test_verification_during_updates_sees_one_whole_list_or_the_other(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(trust_list(1, HANOI), "test", NOW).accepted
    verifier = PassVerifier(updates.authority)
    texts = (qg_pass(HANOI), qg_pass(HUE))
    seen: set[Reason] = set()
    stop = threading.Event()

    def verify_continuously() -> None:
        count = 0
        while not stop.is_set() or count < 50:
            seen.add(verifier.verify(texts[count % 2], NOW).reason)
            count += 1

    worker = threading.Thread(target=verify_continuously)
    worker.start()
    for version in range(2, 22):  # alternate: Hanoi only, Hue only
        assert updates.offer(trust_list(version, HANOI if version % 2 else HUE), "test", NOW).accepted
    stop.set()
    worker.join()
    # A half-built store would show up as another reason (bad_signature, key_not_valid) or an exception.
    assert seen <= {Reason.ACCEPTED, Reason.UNKNOWN_ISSUER} and Reason.ACCEPTED in seen


# --- rotating the pinned list key ------------------------------------------------------------------------------------


def test_the_pinned_list_key_rotates_without_a_technician(tmp_path) -> None:
    updates = gate(tmp_path, pins=(OLD,))
    assert updates.pinned_signers == SignerKeys.from_pem_dir(pins_dir(tmp_path, OLD))

    # 1. The old key signs a list that names the new key as well.
    assert updates.offer(trust_list(1, HANOI, signer=OLD, next_signers=(NEW,)), "test", NOW).accepted
    assert {k.spki for k in updates.pinned_signers} == {spki(OLD), spki(NEW)}
    # 2. The new key signs the next list alone.
    assert updates.offer(trust_list(2, HANOI, HUE, signer=NEW), "test", NOW).accepted
    assert {k.spki for k in updates.pinned_signers} == {spki(NEW)}
    # 3. The old key is no longer trusted to sign lists.
    assert updates.offer(trust_list(3, signer=OLD), "test", NOW).outcome is ListOutcome.UNKNOWN_SIGNER
    assert reason(updates, qg_pass(HUE)) is Reason.ACCEPTED

    # The rotation survives a restart, with the provisioned pin (the old key) still on disk.
    restarted = gate(tmp_path, pins=(OLD,))
    assert restarted.version == 2 and {k.spki for k in restarted.pinned_signers} == {spki(NEW)}
    assert restarted.offer(trust_list(3, signer=OLD), "test", NOW).outcome is ListOutcome.UNKNOWN_SIGNER
    assert restarted.offer(trust_list(3, HANOI, signer=NEW), "test", NOW).accepted


def test_a_list_that_would_pin_only_other_keys_is_refused(tmp_path) -> None:
    updates = gate(tmp_path)
    document = signed_payload(valid_payload(version=1, signers=[spki(NEW)]))
    assert updates.offer(document, "test", NOW).outcome is ListOutcome.SIGNER_NOT_LISTED
    assert updates.pinned_signers == SignerKeys.from_pem_dir(pins_dir(tmp_path, OLD))


def test_the_last_good_list_still_loads_after_its_signer_was_rotated_out(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(trust_list(1, HANOI, signer=OLD, next_signers=(NEW,)), "test", NOW).accepted
    assert updates.offer(trust_list(2, HUE, signer=NEW), "test", NOW).accepted
    (tmp_path / "state" / TRUST_LIST_FILE).write_bytes(b"\x00" * 10)  # v2 damaged: v1, signed by OLD, is the last good

    restarted = gate(tmp_path)
    assert restarted.version == 1 and reason(restarted, qg_pass(HANOI)) is Reason.ACCEPTED
    assert {k.spki for k in restarted.pinned_signers} == {spki(NEW)}  # the pins do not go back with the list


# --- start-up ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("damage", "logged_reason"), [
    ("truncated", "malformed"), ("garbage", "malformed"), ("empty", "malformed"), ("bit flip", "bad_signature"),
])
def test_a_damaged_current_file_falls_back_to_the_last_good_one(tmp_path, caplog, damage, logged_reason) -> None:
    updates = gate(tmp_path)
    v1 = trust_list(1, HANOI)
    assert updates.offer(v1, "test", NOW).accepted
    assert updates.offer(trust_list(2, HUE), "test", NOW).accepted
    current = tmp_path / "state" / TRUST_LIST_FILE
    data = current.read_bytes()
    current.write_bytes({"truncated": data[:100], "garbage": b"not a list", "empty": b"",
                         "bit flip": data[:50] + bytes([data[50] ^ 0x10]) + data[51:]}[damage])

    with caplog.at_level(logging.INFO, logger="qrgate.trust_updates"):
        restarted = gate(tmp_path)

    assert restarted.version == 1
    assert (reason(restarted, qg_pass(HANOI)) is Reason.ACCEPTED
            and reason(restarted, qg_pass(HUE)) is Reason.UNKNOWN_ISSUER)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(current) in errors[0] and logged_reason in errors[0]
    # The damaged file is kept aside; the next list does not push the good one out.
    assert (tmp_path / "state" / f"{TRUST_LIST_FILE}.damaged").exists()
    assert restarted.offer(trust_list(3, HANOI, HUE), "test", NOW).accepted
    assert gate(tmp_path).version == 3
    assert (tmp_path / "state" / TRUST_LIST_LAST_GOOD).read_bytes() == v1


def test_with_no_usable_list_the_static_anchors_are_used_and_the_log_says_so(tmp_path, caplog) -> None:
    updates = gate(tmp_path)
    assert updates.offer(trust_list(1, HANOI), "test", NOW).accepted
    assert updates.offer(trust_list(2, HANOI), "test", NOW).accepted
    for name in (TRUST_LIST_FILE, TRUST_LIST_LAST_GOOD):
        (tmp_path / "state" / name).write_bytes(b"\xa0")

    with caplog.at_level(logging.INFO, logger="qrgate.trust_updates"):
        restarted = gate(tmp_path)

    assert restarted.version is None
    assert (reason(restarted, qg_pass(STATIC)) is Reason.ACCEPTED
            and reason(restarted, qg_pass(HANOI)) is Reason.UNKNOWN_ISSUER)
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "static trust anchors" in messages and TRUST_LIST_LAST_GOOD in messages
    assert restarted.offer(trust_list(3, HANOI), "test", NOW).accepted  # and a new list is accepted again


def test_a_list_file_signed_by_a_key_this_gate_never_pinned_is_not_loaded(tmp_path, caplog) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / TRUST_LIST_FILE).write_bytes(trust_list(9, HANOI, signer=STRANGER))
    with caplog.at_level(logging.ERROR, logger="qrgate.trust_updates"):
        updates = gate(tmp_path)
    assert updates.version is None and "unknown_signer" in caplog.text


def test_a_damaged_pin_file_falls_back_to_the_provisioned_keys(tmp_path, caplog) -> None:
    updates = gate(tmp_path)
    assert updates.offer(trust_list(1, HANOI, next_signers=(NEW,)), "test", NOW).accepted
    (tmp_path / "state" / SIGNERS_FILE).write_bytes(b"\xff\xff")
    with caplog.at_level(logging.ERROR, logger="qrgate.trust_updates"):
        restarted = gate(tmp_path)
    assert SIGNERS_FILE in caplog.text
    # v1 verifies against the provisioned key, and its signers are pinned again.
    assert restarted.version == 1 and {k.spki for k in restarted.pinned_signers} == {spki(OLD), spki(NEW)}


def test_a_list_that_cannot_be_saved_is_still_in_force(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(trust_list(1, HANOI, HUE), "test", NOW).accepted
    last_good = tmp_path / "state" / TRUST_LIST_LAST_GOOD
    (last_good / "blocker").mkdir(parents=True)  # the rename of the current file onto it fails

    acceptance = updates.offer(trust_list(2, HANOI), "test", NOW)

    assert acceptance.accepted and "not saved" in (acceptance.detail or "")
    assert reason(updates, qg_pass(HUE)) is Reason.UNKNOWN_ISSUER  # the removal took effect anyway
    assert gate(tmp_path).version == 1  # what is on disk is still whole


def test_an_unusable_state_directory_is_a_start_up_error(tmp_path) -> None:
    (tmp_path / "state").write_text("a file where the directory should be")
    with pytest.raises(TrustStoreError, match="trust state directory"):
        gate(tmp_path)


def test_provisioned_pins_must_exist_and_be_list_keys(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrustStoreError, match="no trust-list signer public key"):
        SignerKeys.from_pem_dir(tmp_path / "empty")
    (tmp_path / "rsa").mkdir()
    rsa_key = new_dcc_issuer_key("VN", "PS256", not_before=dt.datetime(2025, 1, 1), not_after=dt.datetime(2027, 1, 1))
    (tmp_path / "rsa" / "k.pem").write_bytes(public_pem(rsa_key))
    with pytest.raises(TrustStoreError, match=r"ES256 .P-256. or Ed25519"):
        SignerKeys.from_pem_dir(tmp_path / "rsa")


# --- staleness --------------------------------------------------------------------------------------------------------


def test_a_stale_list_is_flagged_or_refused_by_policy(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(trust_list(1, HANOI, issued_at=NOW, valid_s=7 * DAY), "test", NOW).accepted
    flag = PassVerifier(updates.authority, max_age_s=24 * HOUR, stale_policy="flag")
    refuse = PassVerifier(updates.authority, max_age_s=24 * HOUR, stale_policy=StalePolicy.REFUSE)
    text = qg_pass(HANOI)

    fresh = refuse.verify(text, NOW + 23 * HOUR)
    assert fresh.reason is Reason.ACCEPTED and not fresh.trust_stale
    assert not updates.is_stale(NOW + 24 * HOUR, 24 * HOUR) and updates.is_stale(NOW + 24 * HOUR + 1, 24 * HOUR)

    flagged = flag.verify(text, NOW + 25 * HOUR)
    assert flagged.reason is Reason.ACCEPTED and flagged.trust_stale and flagged.subject_id == "subj-1"
    refused = refuse.verify(text, NOW + 25 * HOUR)
    assert (refused.reason, refused.detail, refused.trust_stale) == (Reason.TRUST_STALE, "trust_list_age", True)
    assert refused.subject_id is None and refused.pass_id == (b"\x07" * 16).hex()
    # Another reason stays that reason; only a pass that would be accepted becomes trust_stale.
    unknown = refuse.verify(qg_pass(HUE), NOW + 25 * HOUR)
    assert unknown.reason is Reason.UNKNOWN_ISSUER and unknown.trust_stale
    assert refuse.verify("https://example.org", NOW + 25 * HOUR).trust_stale is False  # not a pass at all

    # A new list makes the gate fresh again.
    assert updates.offer(trust_list(2, HANOI, issued_at=NOW + 25 * HOUR), "test", NOW + 25 * HOUR).accepted
    assert refuse.verify(text, NOW + 26 * HOUR).reason is Reason.ACCEPTED


def test_a_list_past_its_expiry_is_stale_whatever_its_age(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.offer(trust_list(1, HANOI, valid_s=2 * HOUR), "test", NOW).accepted
    verifier = PassVerifier(updates.authority, max_age_s=48 * HOUR, stale_policy="refuse")
    assert verifier.verify(qg_pass(HANOI), NOW + HOUR).reason is Reason.ACCEPTED
    assert verifier.verify(qg_pass(HANOI), NOW + 3 * HOUR).reason is Reason.TRUST_STALE


def test_static_anchors_are_never_stale_and_a_clock_behind_the_list_is_not_stale() -> None:
    state = TrustState(TrustStore([trusted(HANOI)]))
    assert not state.is_stale(NOW + 365 * DAY, 1.0) and state.list_age_s(NOW) is None
    verdict = PassVerifier(TrustStore([trusted(HANOI)]), max_age_s=1.0,
                           stale_policy="refuse").verify(qg_pass(HANOI), NOW)
    assert verdict.accepted and not verdict.trust_stale
    listed = TrustState(TrustStore(), list_version=1, list_issued_at=NOW, list_expires_at=NOW + DAY)
    assert listed.list_age_s(NOW - HOUR) == 0 and not listed.is_stale(NOW - HOUR, 60)


def test_the_report_says_which_lists_are_in_force_and_how_old(tmp_path) -> None:
    updates = gate(tmp_path)
    assert updates.report(NOW, 24 * HOUR) == {"trust_list_version": None, "trust_list_age_s": None,
                                              "trust_stale": False, "revocation_version": None,
                                              "rule_set_version": None, "rule_set_age_s": None}
    assert updates.offer(trust_list(3, HANOI), "test", NOW).accepted
    assert updates.offer(build_revocation_snapshot(OLD, {}, version=8, issued_at=NOW, expires_at=NOW + DAY),
                         "test", NOW).accepted
    assert updates.report(NOW + 25 * HOUR, 24 * HOUR) == {"trust_list_version": 3, "trust_list_age_s": 25 * HOUR,
                                                          "trust_stale": True, "revocation_version": 8,
                                                          "rule_set_version": None, "rule_set_age_s": None}
