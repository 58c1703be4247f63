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
from qrgate.config import DeviceConfig, PatternConfig
from qrgate.decision import Action, Decider
from qrgate.decoding.factory import build_decoder
from qrgate.feedback import GateFeedback, Outcome
from qrgate.frames.base import Frame
from qrgate.gate import STORAGE_ERROR, Gate, Presentation
from qrgate.outbox import Outbox
from qrgate.passes.trust import TrustStore
from qrgate.passes.verifier import PassVerifier
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
                            patterns=PatternConfig(accepted_on_s=0.02, rejected_on_s=0.02, beep_s=0.005, relay_pulse_s=0.02))
    outbox = Outbox(tmp_path / "outbox.sqlite")
    seen: list[Presentation] = []
    gate = Gate(decoder=build_decoder("zxing", None), verifier=PassVerifier(issuer[1]), decider=Decider(),
                outbox=outbox, show=feedback.show, device=DeviceConfig(), clock=ManualClock(), on_outcome=seen.append)
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
    gate, outbox, factory, seen = parts
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
