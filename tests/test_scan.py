"""``qrgate scan``: text, corners and time per file; JSON lines; exit codes 0 / 1 / 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from qrgate.commands import scan

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VN_PASS = SHARED / "dcc-qa-images" / "VN" / "1.3.0" / "VAC_VN.png"


def run_scan(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="qrgate")
    scan.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["scan", *argv])
    return args.run(args)


@pytest.fixture
def vn_pass() -> Path:
    if not VN_PASS.exists():
        pytest.skip(f"shared test data not found at {VN_PASS}")
    return VN_PASS


@pytest.fixture
def no_code(tmp_path: Path) -> Path:
    path = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 256, (240, 320), dtype=np.uint8), (0, 0), 3))
    return path


def test_json_lines_give_text_corners_and_time(vn_pass, no_code, capsys):
    assert run_scan("--json", str(vn_pass), str(no_code)) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["file"] == str(vn_pass) and len(first["codes"]) == 1
    code = first["codes"][0]
    assert code["text"].startswith("HC1:") and len(code["text"]) == 825
    # The symbol fills the 252x235 image from about (30, 21) to (226, 217), corners clockwise from top-left.
    expected = [(30, 21), (226, 21), (226, 217), (30, 217)]
    assert all(abs(x - ex) <= 3 and abs(y - ey) <= 3
               for (x, y), (ex, ey) in zip(code["corners"], expected, strict=True))
    assert first["ms"] > 0
    assert second == {"file": str(no_code), "codes": [], "ms": second["ms"]}


def test_text_output_and_exit_1_when_nothing_is_found(vn_pass, no_code, capsys):
    assert run_scan(str(no_code)) == 1
    assert capsys.readouterr().out.startswith(f"{no_code}: 0 codes in ")
    assert run_scan(str(vn_pass)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{vn_pass}: 1 code in ") and lines[0].endswith(" ms")
    assert lines[1].strip().startswith("HC1:")
    assert lines[2].strip().startswith("corners (") and "read by zxing" in lines[2]


def test_unreadable_files_exit_2_and_the_others_are_still_scanned(vn_pass, tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    missing = tmp_path / "missing.png"
    assert run_scan(str(junk), str(missing), str(vn_pass)) == 2
    captured = capsys.readouterr()
    assert f"{junk}: not an image" in captured.err and f"{missing}: No such file" in captured.err
    assert f"{vn_pass}: 1 code" in captured.out
    assert run_scan("--json", str(junk)) == 2
    assert json.loads(capsys.readouterr().out) == {"file": str(junk), "error": "not an image OpenCV can decode"}


def test_control_characters_are_escaped_in_text_output(tmp_path, capsys):
    import segno

    path = tmp_path / "binary.png"
    segno.make_qr("line1\nline2\x07").save(str(path), scale=4)
    assert run_scan(str(path)) == 0
    assert "line1\\nline2\\x07" in capsys.readouterr().out
    assert run_scan("--json", str(path)) == 0
    assert json.loads(capsys.readouterr().out)["codes"][0]["text"] == "line1\nline2\x07"


def test_usage_error_without_files():
    with pytest.raises(SystemExit) as exit_info:
        run_scan()
    assert exit_info.value.code == 2
