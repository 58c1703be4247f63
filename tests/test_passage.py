"""A both-ways gate (``device.direction = "both"``): each person's direction comes from their last passage at the
gate; refused passes move nothing; memory is bounded and forgets after ``passage_memory_h``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segno

from qrgate.clock import ManualClock
from qrgate.config import DecoderConfig, DeviceConfig
from qrgate.decision import Decider
from qrgate.decoding.factory import build_decoder
from qrgate.frames.base import Frame
from qrgate.gate import Gate
from qrgate.outbox import Outbox
from qrgate.passage import PassageDirections
from qrgate.passes.trust import TrustStore
from qrgate.passes.verifier import PassVerifier
from qrgate_provisioning.keys import new_issuer_key, trust_entry
from qrgate_provisioning.mint import mint_qrgate_pass


def test_directions_alternate_per_person_and_start_with_in() -> None:
    passages = PassageDirections(memory_h=1)
    walked = []
    for who, at in [("a", 0), ("b", 10), ("a", 20), ("a", 30), ("b", 40)]:
        direction = passages.peek(who, at)
        passages.record(who, direction, at)
        walked.append((who, direction))
    assert walked == [("a", "in"), ("b", "in"), ("a", "out"), ("a", "in"), ("b", "out")]


def test_a_passage_is_forgotten_after_the_memory_and_a_clock_step_back() -> None:
    passages = PassageDirections(memory_h=1)
    passages.record("a", "in", 1000.0)
    assert passages.peek("a", 1000.0 + 3599) == "out"
    assert passages.peek("a", 1000.0 + 3601) == "in"  # an hour later: a new day at the market
    assert passages.peek("a", 1000.0 - 3601) == "in"  # the wall clock stepped far back: nothing is trusted
    assert passages.peek(None, 1000.0) == "in"


def test_memory_is_bounded_oldest_forgotten_first() -> None:
    passages = PassageDirections(capacity=3)
    for index, who in enumerate("abcd"):
        passages.record(who, "in", float(index))
    assert len(passages) == 3
    assert passages.peek("a", 4.0) == "in" and passages.peek("d", 4.0) == "out"
    with pytest.raises(ValueError):
        PassageDirections(capacity=0)


def _frame(text: str, at: float, index: int) -> Frame:
    image = np.full((480, 640), 200, np.uint8)
    modules = np.pad(np.array(segno.make_qr(text).matrix, np.uint8), 4)
    symbol = np.where(np.kron(modules, np.ones((4, 4), np.uint8)) == 1, 20, 230).astype(np.uint8)
    image[100:100 + symbol.shape[0], 150:150 + symbol.shape[1]] = symbol
    return Frame(image, at, index)


@pytest.mark.parametrize("direction", ["both", "in", "out"])
def test_the_gate_stores_each_passage_with_its_direction(tmp_path: Path, direction: str) -> None:
    key = new_issuer_key("VN-HN", "EdDSA")
    (tmp_path / "trust.json").write_text(json.dumps({"keys": [trust_entry(key)]}))
    clock = ManualClock()
    now = int(clock.wall())
    alice = mint_qrgate_pass(key, "VN-HN", b"\x01" * 8, "subject-a", now - 60, now + 86400)
    bob = mint_qrgate_pass(key, "VN-HN", b"\x02" * 8, "subject-b", now - 60, now + 86400)
    forged = mint_qrgate_pass(new_issuer_key("VN-HN", "EdDSA"), "VN-HN", b"\x03" * 8, "subject-c", now - 60,
                              now + 86400)
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        gate = Gate(decoder=build_decoder(DecoderConfig(fallback="none")),
                    verifier=PassVerifier(TrustStore.from_paths([tmp_path / "trust.json"])),
                    decider=Decider(repeat_window_s=0), outbox=outbox, show=lambda _outcome: None,
                    device=DeviceConfig(direction=direction), clock=clock)  # type: ignore[arg-type]
        at = 0.0
        for index, text in enumerate([alice, bob, alice, forged, forged, alice, bob]):
            gate.process(_frame(text, at, index))
            at += 2.0  # longer than the presence gap: each sighting is a new presentation
            clock.advance(2.0)
        stored = [json.loads(event.payload) for event in outbox.pending(limit=100)]
    walked = [(event.get("subject_id") or event["reason"], event["direction"]) for event in stored]
    if direction == "both":
        assert walked == [("subject-a", "in"), ("subject-b", "in"), ("subject-a", "out"), ("unknown_issuer", "in"),
                          ("unknown_issuer", "in"), ("subject-a", "in"), ("subject-b", "out")]
    else:
        assert [d for _who, d in walked] == [direction] * 7
