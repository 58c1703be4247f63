"""Decider: one NEW per presentation, REPEAT within the window, HELD while the code stays in view."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrgate.decision import Action, Decider, payload_key

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16


def test_a_code_held_for_two_seconds_is_one_new_presentation() -> None:
    decider = Decider()
    actions = [decider.observe(A, 100.0 + frame / 30) for frame in range(60)]
    assert actions[0] is Action.NEW
    assert actions[1:] == [Action.HELD] * 59


def test_back_within_the_window_is_a_repeat_then_held() -> None:
    decider = Decider(presence_gap_s=0.8, repeat_window_s=30.0)
    assert decider.observe(A, 0.0) is Action.NEW
    assert decider.observe(A, 0.1) is Action.HELD
    assert decider.observe(A, 5.0) is Action.REPEAT
    assert decider.observe(A, 5.1) is Action.HELD
    assert decider.observe(A, 20.0) is Action.REPEAT


def test_the_window_runs_from_the_new_not_from_repeats() -> None:
    decider = Decider(presence_gap_s=0.8, repeat_window_s=30.0)
    assert decider.observe(A, 0.0) is Action.NEW
    assert decider.observe(A, 29.0) is Action.REPEAT
    assert decider.observe(A, 31.0) is Action.NEW
    assert decider.observe(A, 40.0) is Action.REPEAT  # the new window started at 31


def test_after_the_window_a_new_sighting_is_new() -> None:
    decider = Decider(presence_gap_s=0.8, repeat_window_s=30.0)
    assert decider.observe(A, 0.0) is Action.NEW
    assert decider.observe(A, 30.0) is Action.NEW


def test_a_code_left_in_view_stays_held_past_the_window() -> None:
    # A pass taped in front of the camera must not produce an event every window.
    decider = Decider(presence_gap_s=0.8, repeat_window_s=30.0)
    actions = [decider.observe(A, tick * 0.5) for tick in range(200)]  # 100 s in view
    assert actions == [Action.NEW] + [Action.HELD] * 199
    assert decider.observe(A, 105.0) is Action.NEW  # it left, and its window (from t=0) is over


def test_two_codes_interleaved_are_debounced_independently() -> None:
    decider = Decider()
    actions = [decider.observe(A if frame % 2 == 0 else B, frame / 30) for frame in range(40)]
    assert actions[:2] == [Action.NEW, Action.NEW]
    assert actions[2:] == [Action.HELD] * 38
    assert decider.observe(B, 3.0) is Action.REPEAT
    assert decider.observe(A, 3.01) is Action.REPEAT


@pytest.mark.parametrize(
    ("gap", "expected"),
    [(0.499, Action.HELD), (0.5, Action.REPEAT), (0.501, Action.REPEAT)],
)
def test_presence_gap_boundary(gap: float, expected: Action) -> None:
    decider = Decider(presence_gap_s=0.5, repeat_window_s=30.0)
    decider.observe(A, 10.0)
    assert decider.observe(A, 10.0 + gap) is expected


def test_zero_window_makes_every_presentation_new() -> None:
    decider = Decider(presence_gap_s=0.5, repeat_window_s=0.0)
    assert [decider.observe(A, t) for t in (0.0, 0.1, 1.0, 1.1, 2.0)] == [
        Action.NEW, Action.HELD, Action.NEW, Action.HELD, Action.NEW
    ]


def test_least_recently_seen_code_is_forgotten_beyond_max_tracked() -> None:
    decider = Decider(presence_gap_s=0.8, repeat_window_s=30.0, max_tracked=2)
    for key, now in ((A, 0.0), (B, 1.0), (C, 2.0)):
        assert decider.observe(key, now) is Action.NEW
    assert len(decider) == 2
    assert decider.observe(C, 3.0) is Action.REPEAT
    assert decider.observe(B, 3.5) is Action.REPEAT
    assert decider.observe(A, 4.0) is Action.NEW  # A was evicted, so its window is forgotten
    assert len(decider) == 2


def test_expired_codes_are_forgotten() -> None:
    decider = Decider(presence_gap_s=0.8, repeat_window_s=30.0)
    decider.observe(A, 0.0)
    decider.observe(B, 10.0)
    decider.observe(C, 35.0)  # A's window is over and it is out of view; B's window is still open
    assert len(decider) == 2
    assert decider.observe(B, 36.0) is Action.REPEAT


@pytest.mark.parametrize(
    "kwargs", [{"presence_gap_s": 0}, {"repeat_window_s": -1}, {"max_tracked": 0}]
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Decider(**kwargs)


def test_payload_key() -> None:
    key = payload_key("HC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AH")
    assert len(key) == 16
    assert key == payload_key("HC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AH")
    assert key != payload_key("HC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AI")
    assert len(payload_key("broken \udcff surrogate")) == 16


observations = st.lists(
    st.tuples(
        st.integers(0, 3),  # which code
        st.one_of(st.floats(0, 1.0), st.floats(0, 40.0), st.sampled_from([0.0, 0.5, 5.0])),  # time step
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(observations, st.sampled_from([0.0, 5.0, 30.0]))
def test_property_one_new_per_key_per_window(steps: list[tuple[int, float]], window: float) -> None:
    gap_s = 0.5
    decider = Decider(presence_gap_s=gap_s, repeat_window_s=window, max_tracked=16)
    now = 0.0
    last_seen: dict[int, float] = {}
    last_new: dict[int, float] = {}
    for code, step in steps:
        now += step
        action = decider.observe(bytes([code]) * 16, now)
        if code not in last_seen:
            assert action is Action.NEW  # first sighting
        elif now - last_seen[code] < gap_s:
            assert action is Action.HELD  # still the same presentation
        elif now - last_new[code] < window:
            assert action is Action.REPEAT  # back within the window
        else:
            assert action is Action.NEW  # back after the window
        if action is Action.NEW:
            assert code not in last_new or now - last_new[code] >= window
            last_new[code] = now
        last_seen[code] = now


@settings(max_examples=100, deadline=None)
@given(observations)
def test_property_memory_is_bounded(steps: list[tuple[int, float]]) -> None:
    decider = Decider(presence_gap_s=0.5, repeat_window_s=30.0, max_tracked=3)
    now = 0.0
    for code, step in steps:
        now += step
        decider.observe(bytes([code]) * 16, now)
        assert len(decider) <= 3
