"""The wear figures of the uplink bench count what they claim: one fsync per stored check-in (the
outbox's durability promise), fewer per delivered one when PUBACKs are recorded together."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qrgate_tools.bench_uplink import outbox_wear


def test_outbox_wear_counts_one_sync_per_stored_checkin_and_batches_deliveries(tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: the bench reports no sync counts")
    lines: list[str] = []
    wear = outbox_wear(tmp_path, lines.append, count=40)
    rows = wear["per_event"]
    assert wear["strace"] is True
    assert rows["append: store a check-in"]["syncs"] == pytest.approx(1.0, abs=0.1)  # synchronous=FULL, WAL
    assert rows["deliver: PUBACK, 1/transaction"]["syncs"] == pytest.approx(1.0, abs=0.1)
    assert rows["deliver: PUBACK, 20/transaction"]["syncs"] == pytest.approx(1 / 20, abs=0.03)
    assert rows["deliver: e2e (PUBACK + ack), 1/transaction"]["syncs"] == pytest.approx(2.0, abs=0.1)
    assert rows["append: store a check-in"]["wchar"] > 368  # at least the event's JSON, in whole pages
    assert any("strace -c -f" in line for line in lines)
