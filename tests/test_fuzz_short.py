"""A short coverage-guided fuzz run of the "QR text -> verdict" path, and proof that its oracle bites.

The ten-minute run is manual (the command is in tests/fuzz/fuzz_verify.py); this one runs the same
target for a fixed number of inputs from the seed corpus, so a regression that makes any seed's
neighbourhood raise, hang or accept a forgery fails the suite.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris): no coverage-guided fuzzing")

from fuzz import fuzz_verify as fuzz
from qrgate_provisioning.keys import IssuerKey
from qrgate_provisioning.mint import mint_qrgate_pass

FUZZ_TARGET = Path(fuzz.__file__)
RUNS = 100_000


def run_fuzzer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(FUZZ_TARGET), *args, "-max_len=4200", "-len_control=0", "-timeout=10",
         "-print_final_stats=1", f"-artifact_prefix={artifacts}/"],
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_a_short_fuzz_run_finds_no_crash_hang_or_forgery(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    done = run_fuzzer(tmp_path, "--seeds", str(corpus), str(corpus), f"-runs={RUNS}", "-seed=1",
                      "-max_total_time=120")
    assert done.returncode == 0, done.stderr[-4000:]
    executed = int(re.search(r"stat::number_of_executed_units: (\d+)", done.stderr).group(1))
    assert executed >= len(fuzz.target().seeds)  # at least every seed, plus the mutations the time allowed
    assert list((tmp_path / "artifacts").iterdir()) == []  # no crash-, timeout- or oom- input saved


def test_an_accepted_pass_that_is_no_seed_is_reported_as_a_crash(tmp_path: Path) -> None:
    # A pass really signed with the fuzz issuer's key, but with content no seed has: exactly what a
    # forgery looks like to the oracle. The target must stop on it and save the input.
    key = IssuerKey("VN-HN", "EdDSA", fuzz.fixed_ed25519("qrgate fuzz qg eddsa"))
    unseen = mint_qrgate_pass(key, "VN-HN", b"\x99" * 16, "subject-unseen", fuzz.NOW - 60, fuzz.NOW + 60)
    assert fuzz.target().verifier.verify(unseen, fuzz.NOW).accepted
    with pytest.raises(fuzz.AcceptedForgery):
        fuzz.check(unseen, fuzz.NOW)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "unseen-pass").write_bytes(fuzz.encode_input(0, unseen))
    done = run_fuzzer(tmp_path, str(corpus), "-runs=10")
    assert done.returncode != 0
    assert "AcceptedForgery" in done.stdout  # atheris prints the Python traceback on stdout
    saved = list((tmp_path / "artifacts").iterdir())
    assert [p.name.split("-")[0] for p in saved] == ["crash"]
    assert fuzz.decode_input(saved[0].read_bytes()) == (fuzz.NOW, unseen)
