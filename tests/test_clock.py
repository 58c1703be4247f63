"""Clock honesty: which source vouches for the wall clock, the unsynchronised-clock policy, and jumps.

The sources are exercised on real files laid out as sysfs and /run lay them out, and chrony through a
real ``chronyc`` stand-in script run as a subprocess. The jump test drives a real Gate (zxing decoder,
verifier, Decider, SQLite outbox) with a ManualClock whose wall time jumps between presentations.
"""

from __future__ import annotations

import ctypes
import json
import os
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from qrgate.clock import (
    NOT_SYNCHRONISED,
    RTC_PLAUSIBLE_FROM,
    ChronySource,
    ClockStatus,
    KernelSource,
    ManualClock,
    RtcSource,
    SystemClock,
    TimesyncdSource,
    _Timex,
    chrony_tracking_synchronised,
)
from qrgate.config import DecoderConfig, DeviceConfig
from qrgate.decision import Decider
from qrgate.decoding.factory import build_decoder
from qrgate.frames.base import Frame
from qrgate.gate import Gate, Presentation
from qrgate.outbox import Outbox
from qrgate.passes.clock_policy import CLOCK_UNSYNCHRONISED, apply_clock_policy
from qrgate.passes.trust import TrustStore
from qrgate.passes.verdict import Reason
from qrgate.passes.verifier import PassVerifier
from qrgate.wire import CheckinEvent, iso_utc, new_event_id
from qrgate_provisioning.keys import new_issuer_key, trust_entry
from qrgate_provisioning.mint import mint_qrgate_pass
from test_gate import code_frame

NOW = 1_767_225_600  # 2026-01-01 UTC, ManualClock's default wall time
DAY = 86_400

SYNCHRONISED_REPORT = """\
Reference ID    : C0A80001 (192.168.0.1)
Stratum         : 3
Ref time (UTC)  : Thu Jan 01 00:00:00 2026
System time     : 0.000012345 seconds fast of NTP time
Last offset     : -0.000001234 seconds
Leap status     : Normal
"""
UNSYNCHRONISED_REPORT = """\
Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
Leap status     : Not synchronised
"""
LOCAL_REFERENCE_REPORT = SYNCHRONISED_REPORT.replace("C0A80001 (192.168.0.1)", "7F7F0101 ()")


# --- sources ------------------------------------------------------------------------------------------------


def rtc_dir(tmp_path: Path, since_epoch: str) -> Path:
    device = tmp_path / "rtc0"
    device.mkdir()
    (device / "since_epoch").write_text(since_epoch + "\n")
    return device


def test_an_rtc_vouches_when_it_is_plausible_and_the_system_clock_agrees(tmp_path: Path) -> None:
    rtc_time = NOW - 5
    device = rtc_dir(tmp_path, str(rtc_time))
    assert RtcSource(device, wall=lambda: NOW).vouches()
    assert RtcSource(device, wall=lambda: rtc_time + 119).vouches()
    assert not RtcSource(device, wall=lambda: rtc_time + 121).vouches()  # set wrong after boot (fake-hwclock, a hand)
    assert not RtcSource(device, wall=lambda: rtc_time - DAY).vouches()


def test_an_rtc_that_lost_its_battery_does_not_vouch_even_if_the_clock_was_set_from_it(tmp_path: Path) -> None:
    device = rtc_dir(tmp_path, "946684800")  # 2000-01-01, where a DS3231 restarts
    assert not RtcSource(device, wall=lambda: 946_684_800).vouches()
    assert RTC_PLAUSIBLE_FROM > 946_684_800


@pytest.mark.parametrize("content", [None, "", "garbage", "12.5"])
def test_a_missing_or_unreadable_rtc_does_not_vouch(tmp_path: Path, content: str | None) -> None:
    device = tmp_path / "rtc0"
    if content is not None:
        rtc_dir(tmp_path, content)
    assert not RtcSource(device, wall=lambda: NOW).vouches()


def test_timesyncd_vouches_once_its_flag_file_exists(tmp_path: Path) -> None:
    flag = tmp_path / "timesync" / "synchronized"
    source = TimesyncdSource(flag)
    assert not source.vouches()
    flag.parent.mkdir()
    flag.touch()
    assert source.vouches()


@pytest.mark.parametrize(
    ("report", "synchronised"),
    [
        (SYNCHRONISED_REPORT, True),
        (SYNCHRONISED_REPORT.replace("Normal", "Insert second"), True),
        (UNSYNCHRONISED_REPORT, False),
        (LOCAL_REFERENCE_REPORT, False),  # chrony's "local" directive: free-running, not synchronised
        ("506 Cannot talk to daemon\n", False),
        ("", False),
    ],
)
def test_chrony_tracking_reports_are_read(report: str, synchronised: bool) -> None:
    assert chrony_tracking_synchronised(report) is synchronised


def fake_chronyc(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "chronyc"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


def wait_until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize(
    ("report", "exit_code", "synchronised"),
    [(SYNCHRONISED_REPORT, 0, True), (UNSYNCHRONISED_REPORT, 0, False), (SYNCHRONISED_REPORT, 1, False)],
)
def test_chrony_is_asked_through_chronyc(tmp_path: Path, report: str, exit_code: int, synchronised: bool) -> None:
    ran = tmp_path / "ran"
    script = fake_chronyc(tmp_path, f"""\
        [ "$1 $2" = "-n tracking" ] || exit 2
        cat <<'EOF'
        {textwrap.indent(report, "        ").strip()}
        EOF
        touch {ran}
        exit {exit_code}
        """)
    source = ChronySource((str(script), "-n", "tracking"))
    assert source.vouches() is False  # no answer yet: the first call only starts chronyc
    assert wait_until(ran.exists)
    assert wait_until(lambda: source.vouches() is synchronised) and source.vouches() is synchronised


def test_a_slow_chronyc_never_holds_up_the_caller(tmp_path: Path) -> None:
    starts, release = tmp_path / "starts", tmp_path / "release"
    script = fake_chronyc(tmp_path, f"""\
        echo $$ >> {starts}
        while [ ! -e {release} ]; do sleep 0.01; done
        cat <<'EOF'
        {textwrap.indent(SYNCHRONISED_REPORT, "        ").strip()}
        EOF
        """)
    mono = [0.0]
    source = ChronySource((str(script), "-n", "tracking"), refresh_s=30.0, timeout_s=15, monotonic=lambda: mono[0])
    try:
        assert source.vouches() is False
        assert wait_until(starts.exists)
        mono[0] = 60.0  # stale again while chronyc still runs
        assert [source.vouches() for _ in range(3)] == [False, False, False]
        # Every call above returned while chronyc was blocked on the release file, and no second one started.
        pids = starts.read_text().split()
        assert len(pids) == 1
        os.kill(int(pids[0]), 0)  # still running: nobody waited for it to finish, nor killed it at its timeout
    finally:
        release.touch()
    assert wait_until(source.vouches)


def test_without_chronyc_installed_chrony_never_vouches(tmp_path: Path) -> None:
    source = ChronySource((str(tmp_path / "no-such-chronyc"), "-n", "tracking"))
    assert [source.vouches() for _ in range(3)] == [False, False, False]


def test_the_kernel_timex_structure_has_the_abi_size() -> None:
    # The kernel writes the whole struct: a short one would be a buffer overrun in the capture loop.
    assert ctypes.sizeof(_Timex) == (208 if ctypes.sizeof(ctypes.c_long) == 8 else 128)
    assert KernelSource().vouches() in (True, False)


# --- the system clock ---------------------------------------------------------------------------------------


class CountingSource:
    """A source that answers as told and counts how often it was asked."""

    def __init__(self, name: str, answer: bool) -> None:
        self.name, self.answer, self.asked = name, answer, 0

    def vouches(self) -> bool:
        self.asked += 1
        return self.answer


def test_the_first_source_that_vouches_names_the_status(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    good_rtc = RtcSource(rtc_dir(tmp_path, str(int(time.time()))))
    bad_rtc = RtcSource(tmp_path / "no-rtc")
    assert SystemClock(sources=[good_rtc, TimesyncdSource(flag)]).status() == ClockStatus(True, "rtc")
    assert SystemClock(sources=[bad_rtc, TimesyncdSource(flag)]).status() == ClockStatus(True, "timesyncd")
    assert SystemClock(sources=[bad_rtc, TimesyncdSource(tmp_path / "absent")]).status() == NOT_SYNCHRONISED
    assert SystemClock(sources=[]).synchronised() is False


def test_sources_after_the_one_that_vouches_are_not_asked() -> None:
    first, second = CountingSource("first", True), CountingSource("second", True)
    assert SystemClock(sources=[first, second]).status() == ClockStatus(True, "first")
    assert (first.asked, second.asked) == (1, 0)


def test_the_answer_is_cached_between_refreshes(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    cached = SystemClock(sources=[TimesyncdSource(flag)], refresh_s=3600)
    fresh = SystemClock(sources=[TimesyncdSource(flag)], refresh_s=0)
    assert not cached.synchronised() and not fresh.synchronised()
    flag.touch()
    assert cached.status() == NOT_SYNCHRONISED  # not asked again within the hour
    assert fresh.status() == ClockStatus(True, "timesyncd")


def test_a_per_event_call_within_the_refresh_interval_asks_no_source() -> None:
    source = CountingSource("counting", False)
    clock = SystemClock(sources=[source], refresh_s=3600)
    for _ in range(1000):
        clock.synchronised()
    assert source.asked == 1


def test_an_assumed_clock_asks_no_source() -> None:
    source = CountingSource("counting", False)
    assert SystemClock(True, sources=[source]).status() == ClockStatus(True, "assumed")
    assert SystemClock(False).status() == ClockStatus(False, "assumed")
    assert source.asked == 0


def test_the_host_clock_gives_an_answer_without_a_declared_rtc() -> None:
    status = SystemClock().status()
    assert status.source in ("timesyncd", "chrony", "kernel", "none")
    assert status.synchronised is (status.source != "none")


# --- the policy for an unsynchronised clock ----------------------------------------------------------------


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[str, object]:
    """Real verdicts of the real verifier: one per kind of answer."""
    key = new_issuer_key("VN-HN", "EdDSA")
    trust_file = tmp_path_factory.mktemp("trust") / "trust.json"
    trust_file.write_text(json.dumps({"keys": [trust_entry(key)]}))
    verifier = PassVerifier(TrustStore.from_paths([trust_file]), clock_skew_s=0)
    forger = new_issuer_key("VN-HN", "EdDSA")

    def mint(signer, iat: int, exp: int) -> str:
        return mint_qrgate_pass(signer, "VN-HN", b"\x42" * 8, "subject-1", iat, exp, initials="NT")

    genuine = mint(key, NOW - DAY, NOW + DAY)
    forged_body = mint(forger, NOW - DAY, NOW + DAY)
    return {
        "accepted": verifier.verify(genuine, NOW),
        "expired": verifier.verify(mint(key, NOW - 3 * DAY, NOW - DAY), NOW),
        "not_yet_valid": verifier.verify(mint(key, NOW + DAY, NOW + 3 * DAY), NOW),
        "unknown_issuer": verifier.verify(forged_body, NOW),
        "malformed": verifier.verify("QG1:%%%", NOW),
        "not_a_pass": verifier.verify("https://example.com", NOW),
    }


def test_the_verdicts_under_test_are_what_their_names_say(verdicts) -> None:
    assert {name: str(v.reason) for name, v in verdicts.items()} == {name: name for name in verdicts}


@pytest.mark.parametrize("name", ["accepted", "expired", "not_yet_valid"])
def test_refuse_rejects_every_verdict_that_read_the_wall_clock(verdicts, name: str) -> None:
    original = verdicts[name]
    refused = apply_clock_policy(original, synchronised=False, policy="refuse")
    assert refused.reason == CLOCK_UNSYNCHRONISED == "clock_unsynchronised"
    assert not refused.accepted
    assert (refused.subject_id, refused.initials, refused.detail) == (None, None, "clock")
    # What identifies the pass stays, for the event and the technician.
    assert (refused.format, refused.issuer, refused.kid, refused.pass_id) == (
        original.format, original.issuer, original.kid, original.pass_id)


@pytest.mark.parametrize("name", ["unknown_issuer", "malformed", "not_a_pass"])
def test_refuse_keeps_verdicts_that_never_read_the_clock(verdicts, name: str) -> None:
    assert apply_clock_policy(verdicts[name], synchronised=False, policy="refuse") is verdicts[name]


@pytest.mark.parametrize("name", ["accepted", "expired", "not_yet_valid", "unknown_issuer", "malformed", "not_a_pass"])
def test_accept_and_flag_and_a_synchronised_clock_keep_every_verdict(verdicts, name: str) -> None:
    verdict = verdicts[name]
    assert apply_clock_policy(verdict, synchronised=False, policy="accept_and_flag") is verdict
    assert apply_clock_policy(verdict, synchronised=True, policy="refuse") is verdict
    assert apply_clock_policy(verdict, synchronised=True, policy="accept_and_flag") is verdict


def test_an_unknown_policy_is_an_error(verdicts) -> None:
    with pytest.raises(ValueError, match="accept_and_flag, refuse"):
        apply_clock_policy(verdicts["accepted"], synchronised=True, policy="ignore")  # type: ignore[arg-type]


def test_the_accepted_verdict_really_is_accepted_before_the_policy(verdicts) -> None:
    assert verdicts["accepted"].accepted and verdicts["accepted"].reason is Reason.ACCEPTED


# --- clock jumps ---------------------------------------------------------------------------------------------


def test_event_ids_keep_increasing_when_the_wall_clock_steps_back() -> None:
    before = new_event_id(now=NOW)
    after_back = new_event_id(now=NOW - DAY)
    after_forward = new_event_id(now=NOW + DAY)
    values = [uuid.UUID(i) for i in (before, after_back, after_forward)]
    assert values[0].int < values[1].int < values[2].int
    assert all(v.version == 7 and v.variant == uuid.RFC_4122 for v in values)
    assert sorted([before, after_back, after_forward]) == [before, after_back, after_forward]  # as text too


def test_a_wall_clock_jumping_back_and_forward_during_a_run_breaks_no_order(tmp_path: Path) -> None:
    clock = ManualClock(wall=NOW, monotonic=1000.0)
    key = new_issuer_key("VN-HN", "EdDSA")
    trust_file = tmp_path / "trust.json"
    trust_file.write_text(json.dumps({"keys": [trust_entry(key)]}))
    passes = {
        name: mint_qrgate_pass(key, "VN-HN", name.encode() * 4, f"subject-{name}", NOW - 3 * DAY, NOW + 3 * DAY)
        for name in ("A", "B", "C")
    }
    frames = {name: code_frame(text) for name, text in passes.items()}
    empty = np.full_like(frames["A"], 200)
    outbox = Outbox(tmp_path / "outbox.sqlite", clock=clock)
    seen: list[Presentation] = []
    shown: list[str] = []
    gate = Gate(decoder=build_decoder(DecoderConfig(fallback="none")),
                verifier=PassVerifier(TrustStore.from_paths([trust_file])),
                decider=Decider(presence_gap_s=0.8, repeat_window_s=30.0), outbox=outbox, show=shown.append,
                device=DeviceConfig(), clock=clock, on_outcome=seen.append)
    index = 0

    def present(name: str) -> None:
        """The code held up for three frames at 30 fps, then gone for two seconds."""
        nonlocal index
        for _ in range(3):
            gate.process(Frame(frames[name], clock.monotonic(), index))
            clock.advance(1 / 30)
            index += 1
        clock.advance(2.0)
        gate.process(Frame(empty, clock.monotonic(), index))
        index += 1

    try:
        present("A")  # event 1
        clock.jump_wall(-DAY)
        clock.is_synchronised = False  # the step came from a bad source: the clock no longer vouched for
        present("A")  # 2 s later by the monotonic clock: a repeat, whatever the wall clock says
        present("B")  # event 2, stamped a day earlier than event 1
        clock.advance(40.0)
        present("A")  # the repeat window has closed: event 3
        clock.jump_wall(2 * DAY)  # now a day ahead of the start
        clock.is_synchronised = True
        present("A")  # a repeat again, despite the jump forward
        present("C")  # event 4
        events = [CheckinEvent.from_json(p.payload) for p in outbox.pending()]
    finally:
        outbox.close()

    assert [(p.action.value, p.verdict.subject_id) for p in seen] == [
        ("new", "subject-A"), ("repeat", "subject-A"), ("new", "subject-B"),
        ("new", "subject-A"), ("repeat", "subject-A"), ("new", "subject-C"),
    ]
    assert shown == ["accepted"] * 6
    assert [e.subject_id for e in events] == ["subject-A", "subject-B", "subject-A", "subject-C"]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    ids = [uuid.UUID(e.event_id).int for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 4
    # The events tell the truth about the wall clock they saw, and whether it was vouched for.
    assert [e.time[:10] for e in events] == ["2026-01-01", "2025-12-31", "2025-12-31", "2026-01-02"]
    assert events[1].time < events[0].time  # the seq, not the time, is the order
    assert [e.clock_synced for e in events] == [True, False, False, True]
    assert events[0].time == iso_utc(NOW)
    assert gate.stats.presentations == 4 and gate.stats.repeats == 2
