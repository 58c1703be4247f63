"""The README's first command, headless: every visitor gets the expected verdict and no event is lost."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_headless_json_summary():
    result = subprocess.run([sys.executable, "-m", "qrgate.cli", "demo", "--headless", "--json"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["visitors"] == 10
    assert summary["mismatches"] == []
    # 10 visitors, the last one the same person as the one before: 10 answers, 9 check-in events.
    assert (summary["presentations"], summary["accepted"], summary["rejected"]) == (10, 6, 4)
    assert summary["events_stored"] == summary["events_published"] == summary["events_received"] == 9
    assert summary["lost"] == 0 and summary["duplicates_received"] == 0
