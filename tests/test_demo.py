"""The README's first command, headless: every visitor gets the expected verdict and no event is lost."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_headless_json_summary():
    result = subprocess.run([sys.executable, "-m", "qrgate.cli", "demo", "--headless", "--json"],
                            check=False, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["visitors"] == 12
    assert summary["mismatches"] == []  # each visitor got the reason demo_visitors expects, the two rule refusals too
    # 12 visitors, the last one the same person as the one before: 12 answers, 11 check-in events; red for
    # the URL, the expired, forged and unknown-issuer passes, the positive test and dose 1 of 2.
    assert (summary["presentations"], summary["accepted"], summary["rejected"]) == (12, 6, 6)
    assert summary["events_stored"] == summary["events_published"] == summary["events_received"] == 11
    assert summary["lost"] == 0 and summary["duplicates_received"] == 0
