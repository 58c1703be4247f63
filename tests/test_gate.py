"""The per-frame path on its own: real decoder, verifier, decider, outbox and mock-pin feedback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import segno
from gpiozero.pins.mock import MockFactory

from qrgate.board import load_board_profile
from qrgate.clock import ManualClock
from qrgate.config import DecoderConfig, DeviceConfig, PatternConfig
from qrgate.decision import Action, Decider
from qrgate.decoding.factory import build_decoder
from qrgate.feedback import GateFeedback, Outcome
from qrgate.frames.base import Frame
from qrgate.gate import STORAGE_ERROR, Gate, Presentation
from qrgate.outbox import Outbox
from qrgate.passes.authority import TrustAuthority
from qrgate.passes.trust import TrustedKey, TrustStore
from qrgate.passes.verifier import PassVerifier
from qrgate.rules.policy import builtin_rule_set
from qrgate.wire import CheckinEvent
from qrgate_provisioning.dcc_test_issuer import RULE_CASE_REASONS, dcc_rule_cases, new_dcc_test_issuer
from qrgate_provisioning.keys import new_issuer_key, trust_entry
from qrgate_provisioning.mint import mint_qrgate_pass

GREEN, RED = 17, 27


def code_frame(text: str) -> np.ndarray:
    image = np.full((480, 640), 200, np.uint8)
    modules = np.pad(np.array(segno.make_qr(text).matrix, np.uint8), 4)
    symbol = np.where(np.kron(modules, np.ones((4, 4), np.uint8)) == 1, 20, 230).astype(np.uint8)
    image[100:100 + symbol.shape[0], 150:150 + symbol.shape[1]] = symbol
    return image


@pytest.fixture
def issuer(tmp_path: Path):
    key = new_issuer_key("VN-HN", "EdDSA")
    trust_file = tmp_path / "trust.json"
    trust_file.write_text(json.dumps({"keys": [trust_entry(key)]}))
    return key, TrustStore.from_paths([trust_file])


@pytest.fixture
def parts(tmp_path: Path, issuer):
    factory = MockFactory()
    feedback = GateFeedback(load_board_profile("rpi-gate-v1"), pin_factory=factory,
                            patterns=PatternConfig(accepted_on_s=0.02, rejected_on_s=0.02, beep_s=0.005,
                                                   relay_pulse_s=0.02))
    outbox = Outbox(tmp_path / "outbox.sqlite")
    seen: list[Presentation] = []
    gate = Gate(decoder=build_decoder(DecoderConfig(fallback="none")), verifier=PassVerifier(issuer[1]),
                decider=Decider(), outbox=outbox, show=feedback.show, device=DeviceConfig(), clock=ManualClock(),
                on_outcome=seen.append)
    yield gate, outbox, factory, seen
    feedback.close()
    outbox.close()


def test_empty_frames_cost_one_decode_and_nothing_else(parts):
    gate, outbox, factory, seen = parts
    empty = np.full((480, 640), 128, np.uint8)
    for index in range(20):
        gate.process(Frame(empty, index / 30, index))
    assert (gate.stats.frames, gate.stats.frames_with_code, gate.stats.presentations) == (20, 0, 0)
    assert seen == [] and outbox.last_seq == 0
    assert len(factory.pin(GREEN).states) == len(factory.pin(RED).states) == 1  # never driven


def test_a_held_code_is_one_presentation_and_one_stored_event(parts):
    gate, outbox, _factory, seen = parts
    grey = code_frame("https://example.com/held")
    for index in range(45):  # 1.5 s at 30 fps
        gate.process(Frame(grey, index / 30, index))
    assert gate.stats.frames_with_code == 45
    assert [(p.action, p.reason, p.outcome) for p in seen] == [(Action.NEW, "not_a_pass", Outcome.REJECTED)]
    assert outbox.last_seq == 1 and seen[0].event.seq == 1


def test_a_check_in_that_cannot_be_stored_is_shown_red_never_green(parts, issuer):
    gate, outbox, factory, seen = parts
    key = issuer[0]
    outbox.close()  # storage gone, as with a dead SD card
    now = ManualClock().wall()
    valid = mint_qrgate_pass(key, "VN-HN", b"\x01" * 8, "s1", int(now) - 60, int(now) + 3600)
    gate.process(Frame(code_frame(valid), 0.0, 0))
    assert [(p.reason, p.outcome, p.event) for p in seen] == [(STORAGE_ERROR, Outcome.REJECTED, None)]
    assert seen[0].verdict.accepted  # the pass was good; the gate could not keep its record
    assert gate.stats.storage_errors == 1
    deadline = time.monotonic() + 5
    while len(factory.pin(RED).states) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [int(s.state) for s in factory.pin(RED).states] == [0, 1, 0]
    assert [int(s.state) for s in factory.pin(GREEN).states] == [0]


CCCD_ID = "001090123456"
CCCD_TEXT = f"{CCCD_ID}||Nguyễn Thử Nghiệm|01011990|Nam|Số 1 Phố Thử, Hàng Bạc, Hoàn Kiếm, Hà Nội|15082021"


@pytest.fixture
def policy_gate(tmp_path: Path):
    """Builds a gate with the given policies; closes its feedback and outbox afterwards."""
    built: list = []
    yield lambda **options: _policy_gate(tmp_path, built, **options)
    for part in built:
        part.close()


def _policy_gate(tmp_path: Path, built: list, **options) -> tuple[Gate, Outbox, list[Presentation]]:
    from qrgate.passes.cccd import CccdPolicy

    feedback = GateFeedback(load_board_profile("rpi-gate-v1"), pin_factory=MockFactory(),
                            patterns=PatternConfig(accepted_on_s=0.02, rejected_on_s=0.02, beep_s=0.005,
                                                   relay_pulse_s=0.02))
    outbox = Outbox(tmp_path / "policy-outbox.sqlite")
    built += [feedback, outbox]
    seen: list[Presentation] = []
    verifier = PassVerifier(options.pop("trust", TrustStore()), cccd=options.pop("cccd", CccdPolicy()))
    gate = Gate(decoder=build_decoder(DecoderConfig(fallback="none")), verifier=verifier, decider=Decider(),
                outbox=outbox, show=feedback.show, device=DeviceConfig(), clock=options.pop("clock", ManualClock()),
                on_outcome=seen.append, **options)
    return gate, outbox, seen


@pytest.mark.parametrize("enabled", [True, False])
def test_a_chip_id_card_is_identified_only_under_the_policy_and_only_its_keyed_hash_is_stored(policy_gate, enabled):
    import hashlib
    import hmac

    from qrgate.passes.cccd import CccdPolicy

    key = bytes(range(32))
    gate, outbox, seen = policy_gate(cccd=CccdPolicy(enabled=enabled, hash_key=key if enabled else b""))
    gate.process(Frame(code_frame(CCCD_TEXT), 0.0, 0))
    [presentation] = seen
    stored = outbox.pending(5)[0].payload.decode()
    if enabled:
        assert (presentation.outcome, presentation.reason) == (Outcome.IDENTIFIED, "identified")
        event = presentation.event
        assert (event.verdict, event.format) == ("identified", "cccd")
        assert event.subject_id == hmac.new(key, CCCD_ID.encode(), hashlib.sha256).hexdigest()[:32]
        assert gate.stats.identified == 1
    else:
        assert (presentation.outcome, presentation.reason) == (Outcome.REJECTED, "unsigned_pass")
        assert presentation.event.subject_id is None
    # Neither the number, the name nor the address reaches the outbox (and so the wire).
    assert CCCD_ID not in stored and "Nguy" not in stored and "Hà Nội" not in stored


@pytest.mark.parametrize("policy, reason, outcome", [
    ("accept_and_flag", "accepted", Outcome.ACCEPTED),
    ("refuse", "clock_unsynchronised", Outcome.REJECTED),
])
def test_an_unsynchronised_clock_is_flagged_or_refused_by_policy(policy_gate, issuer, policy, reason, outcome):
    key, trust = issuer
    clock = ManualClock(synchronised=False)
    gate, _outbox, seen = policy_gate(trust=trust, clock=clock, clock_policy=policy)
    now = clock.wall()
    valid = mint_qrgate_pass(key, "VN-HN", b"\x02" * 8, "s2", int(now) - 60, int(now) + 3600)
    gate.process(Frame(code_frame(valid), 0.0, 0))
    [presentation] = seen
    assert (presentation.reason, presentation.outcome) == (reason, outcome)
    assert presentation.event.clock_synced is False
    assert (presentation.event.subject_id is not None) == (policy == "accept_and_flag")


# --- validation rules, through to the stored event ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rule_gate_passes():
    """The test DCC issuer's rule cases (ES256: small enough for code_frame), and a store trusting it."""
    now = ManualClock().wall()
    issuer = new_dcc_test_issuer("ES256", now)
    return dcc_rule_cases(issuer, now), TrustStore([TrustedKey.from_certificate(issuer.certificate, "test")])


@pytest.mark.parametrize("case", [
    "test_positive", "vaccination_incomplete", "test_too_old_pcr", "recovery_expired",
    "vaccination_complete", "test_negative_pcr", "test_negative_rapid", "recovery_valid",
])
def test_the_builtin_rules_decide_the_light_and_the_stored_event(policy_gate, rule_gate_passes, case):
    passes, store = rule_gate_passes
    gate, outbox, seen = policy_gate(trust=TrustAuthority.of_store(store, builtin_rule_set()))
    gate.process(Frame(code_frame(passes[case]), 0.0, 0))
    [presentation] = seen
    expected = RULE_CASE_REASONS[case]
    assert presentation.reason == expected
    assert presentation.outcome is (Outcome.ACCEPTED if expected == "accepted" else Outcome.REJECTED)
    [stored] = outbox.pending(5)
    event = CheckinEvent.from_json(stored.payload)
    assert (event.verdict, event.reason, event.format) == (
        "accepted" if expected == "accepted" else "rejected", expected, "dcc")
    assert event.pass_id == presentation.verdict.pass_id and event.issuer == "VN"
    # The certificate's content never reaches the outbox, nor the failing rule's id (a technician's detail).
    text = stored.payload.decode()
    assert "Nguy" not in text and "1990-01-01" not in text and "-VN-0" not in text


@pytest.mark.parametrize("policy, reason", [("accept_and_flag", "test_too_old"), ("refuse", "clock_unsynchronised")])
def test_a_rule_verdict_on_an_unsynchronised_clock_follows_the_clock_policy(policy_gate, rule_gate_passes, policy,
                                                                             reason):
    passes, store = rule_gate_passes
    gate, _outbox, seen = policy_gate(trust=TrustAuthority.of_store(store, builtin_rule_set()),
                                     clock=ManualClock(synchronised=False), clock_policy=policy)
    gate.process(Frame(code_frame(passes["test_too_old_pcr"]), 0.0, 0))
    [presentation] = seen
    assert (presentation.reason, presentation.outcome, presentation.event.reason) == (reason, Outcome.REJECTED, reason)
    assert presentation.event.clock_synced is False
