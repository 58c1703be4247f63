"""``qrgate-issuer``, run as a process: key new, pass mint, pass batch, cards; exit 0 done, 1 failed, 2 usage."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from cryptography import x509

from qrgate.decoding.factory import build_decoder
from qrgate.passes.trust import TrustStore
from qrgate.passes.verdict import PassFormat, Reason
from qrgate.passes.verifier import PassVerifier

VIETNAM = dt.timezone(dt.timedelta(hours=7))


def issuer(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qrgate_provisioning.cli", *map(str, args)],
        cwd=cwd, check=False, capture_output=True, text=True, timeout=60,
    )


def new_key(directory: Path, issuer_id: str = "VN-HN", alg: str = "EdDSA") -> tuple[Path, Path]:
    result = issuer("key", "new", "--issuer", issuer_id, "--alg", alg, "--out", directory, cwd=directory)
    assert result.returncode == 0, result.stderr
    (key,) = directory.glob(f"{issuer_id}-*.key")
    (trust,) = directory.glob(f"{issuer_id}-*.trust.json")
    return key, trust


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def end_of_day_after(days: int) -> int:
    last_day = dt.datetime.now(VIETNAM).date() + dt.timedelta(days=days)
    return int(dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), VIETNAM).timestamp()) - 1


@pytest.fixture(scope="module")
def issuer_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("issuer")
    key, trust = new_key(directory)
    return {"directory": directory, "key": key, "trust": trust}


# ---- key new ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_key_new_writes_an_owner_only_private_key_and_a_trust_entry_gates_load(tmp_path, alg) -> None:
    result = issuer("key", "new", "--issuer", "VN-HN", "--alg", alg, "--out", tmp_path / "keys", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (key,) = (tmp_path / "keys").glob("VN-HN-*.key")
    (trust,) = (tmp_path / "keys").glob("VN-HN-*.trust.json")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    (entry,) = json.loads(trust.read_text())["keys"]
    assert entry["alg"] == alg and entry["issuer"] == "VN-HN" and entry["formats"] == ["qrgate"]
    assert "PRIVATE" not in trust.read_text()
    (trusted,) = TrustStore.from_paths([tmp_path / "keys"])  # the .key file is ignored in a trust directory
    assert base64.b64encode(trusted.kid).decode() == entry["kid"]
    assert trusted.kid.hex() in result.stdout and str(key) in result.stdout


def test_key_new_dcc_writes_a_certificate_valid_for_the_given_days(tmp_path) -> None:
    result = issuer("key", "new", "--dcc-country", "VN", "--alg", "ES256", "--valid-days", "30",
                    "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (pem,) = tmp_path.glob("VN-*.crt.pem")
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == dt.timedelta(days=30)
    assert abs(certificate.not_valid_before_utc.timestamp() - time.time()) < 120
    (key,) = tmp_path.glob("VN-*.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert all(PassFormat.DCC in trusted.formats for trusted in TrustStore.from_paths([tmp_path]))


@pytest.mark.parametrize("args, message", [
    (["--issuer", "VN-HN", "--alg", "PS256"], "not fit a 3 cm QR code"),
    (["--dcc-country", "VN", "--alg", "EdDSA"], "PS256 or ES256"),
    (["--issuer", "VN-HN", "--alg", "RS256"], "invalid choice"),
    (["--issuer", "VN/HN", "--alg", "EdDSA"], "issuer id"),
    (["--dcc-country", "vn", "--alg", "ES256"], "two capital letters"),
    (["--issuer", "VN-HN", "--alg", "EdDSA", "--valid-days", "30"], "--valid-days is for --dcc-country"),
    (["--issuer", "VN-HN", "--dcc-country", "VN", "--alg", "ES256"], "not allowed with"),
])
def test_key_new_refuses_a_wrong_algorithm_or_name_as_a_usage_error(tmp_path, args, message) -> None:
    result = issuer("key", "new", *args, "--out", tmp_path / "keys", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "keys").exists()


# ---- pass mint --------------------------------------------------------------------------------------

def test_pass_mint_prints_a_pass_the_gate_accepts_and_a_png_that_scans(issuer_files, tmp_path) -> None:
    png = tmp_path / "pass.png"
    result = issuer("pass", "mint", "--key", issuer_files["key"], "--issuer", "VN-HN", "--pass-id", "C0FFEE00",
                    "--subject", "hn-3f9a1c0d2e", "--valid-days", "365", "--initials", "N.T.A", "--png", png,
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (text,) = result.stdout.splitlines()
    assert text.startswith("QG1:")
    verdict = PassVerifier(TrustStore.from_paths([issuer_files["trust"]])).verify(text, time.time())
    assert verdict.accepted, verdict
    assert (verdict.issuer, verdict.pass_id, verdict.subject_id, verdict.initials) == (
        "VN-HN", "c0ffee00", "hn-3f9a1c0d2e", "N.T.A")
    assert verdict.expires == end_of_day_after(365)
    assert "pass id c0ffee00" in result.stderr and "QR version" in result.stderr
    codes = build_decoder().decode(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    assert [code.text for code in codes] == [text]


def test_pass_mint_draws_a_fresh_16_byte_id_each_time(issuer_files, tmp_path) -> None:
    verifier = PassVerifier(TrustStore.from_paths([issuer_files["trust"]]))
    ids = set()
    for _ in range(2):
        result = issuer("pass", "mint", "--key", issuer_files["key"], "--issuer", "VN-HN", "--random-id",
                        "--subject", "hn-x", "--valid-days", "7", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        verdict = verifier.verify(result.stdout.strip(), time.time())
        assert verdict.accepted and verdict.initials is None
        ids.add(verdict.pass_id)
    assert len(ids) == 2 and all(len(bytes.fromhex(pass_id)) == 16 for pass_id in ids)


def test_pass_mint_with_an_rsa_key_fails_with_the_reason(tmp_path) -> None:
    result = issuer("key", "new", "--dcc-country", "VN", "--alg", "PS256", "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (key,) = tmp_path.glob("VN-*.key")
    result = issuer("pass", "mint", "--key", key, "--issuer", "VN", "--random-id", "--subject", "hn-x",
                    "--valid-days", "7", cwd=tmp_path)
    assert result.returncode == 1
    assert "ES256 or EdDSA, not PS256" in result.stderr
    assert result.stdout == ""


def test_an_unreadable_or_wrong_key_file_fails_naming_the_file(issuer_files, tmp_path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    missing = tmp_path / "missing.key"
    for key, message in ((missing, "No such file"), (garbage, "not an unencrypted private key"),
                         (issuer_files["trust"], "not an unencrypted private key")):
        result = issuer("pass", "mint", "--key", key, "--issuer", "VN-HN", "--random-id", "--subject", "hn-x",
                        "--valid-days", "7", cwd=tmp_path)
        assert result.returncode == 1, key
        assert message in result.stderr and str(key.name) in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--subject", "001203004567"], "looks like a citizen ID number"),
    (["--subject", "x" * 65], "subject_id: must be 1 to 64"),
    (["--subject", "hn-x", "--initials", "ABCDEFGHI"], "initials: must be 1 to 8"),
])
def test_pass_mint_refuses_bad_fields_without_echoing_them(issuer_files, tmp_path, args, message) -> None:
    result = issuer("pass", "mint", "--key", issuer_files["key"], "--issuer", "VN-HN", "--random-id", *args,
                    "--valid-days", "7", cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert args[-1] not in result.stderr


@pytest.mark.parametrize("args", [
    [],  # neither --pass-id nor --random-id
    ["--random-id", "--pass-id", "00"],
    ["--random-id", "--valid-days", "0"],
    ["--random-id", "--valid-days", "soon"],
])
def test_pass_mint_usage_errors_exit_2(issuer_files, tmp_path, args) -> None:
    base = ["pass", "mint", "--key", issuer_files["key"], "--issuer", "VN-HN", "--subject", "hn-x"]
    if "--valid-days" not in args:
        args = [*args, "--valid-days", "7"]
    result = issuer(*base, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert "usage:" in result.stderr and result.stdout == ""


def test_help_lists_the_issuer_and_the_list_commands(tmp_path) -> None:
    result = issuer("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("key", "pass", "cards", "trust-list", "revocation", "publish"):
        assert f"\n    {command}" in result.stdout, command


def test_no_command_is_a_usage_error(tmp_path) -> None:
    result = issuer(cwd=tmp_path)
    assert result.returncode == 2 and "usage:" in result.stderr


# ---- pass batch -------------------------------------------------------------------------------------

def test_pass_batch_writes_every_row_back_with_its_pass(issuer_files, tmp_path) -> None:
    requests = write_csv(tmp_path / "requests.csv", ["ho_ten", "subject_id", "initials", "pass_id", "household"], [
        ["Nguyễn Thị Ánh", "hn-b1", "N.T.A", "", "H-1"],
        ["Đặng Văn Bình", " hn-b2 ", "Đ.V.B", "ABCDEF0123", ""],
        ["", "", "", "", ""],  # a blank line a spreadsheet leaves behind
        ["Lê Thị Cúc", "hn-b3", "L.T.C", "", "H-2"],
    ])
    out = tmp_path / "out.csv"
    result = issuer("pass", "batch", "--key", issuer_files["key"], "--issuer", "VN-HN", "--csv", requests,
                    "--valid-days", "90", "--out-csv", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b"\xef\xbb\xbf")  # the BOM makes spreadsheets read it as UTF-8
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = read_csv(out)
    assert list(rows[0]) == ["ho_ten", "subject_id", "initials", "pass_id", "household", "expires", "pass"]
    assert [row["ho_ten"] for row in rows] == ["Nguyễn Thị Ánh", "Đặng Văn Bình", "Lê Thị Cúc"]
    assert rows[1]["pass_id"] == "abcdef0123"
    verifier = PassVerifier(TrustStore.from_paths([issuer_files["trust"]]))
    expected_expiry = dt.datetime.fromtimestamp(end_of_day_after(90), VIETNAM).strftime("%d/%m/%Y")
    for row, subject in zip(rows, ["hn-b1", "hn-b2", "hn-b3"], strict=True):
        verdict = verifier.verify(row["pass"], time.time())
        assert verdict.accepted
        assert (verdict.subject_id, verdict.pass_id, verdict.initials) == (subject, row["pass_id"], row["initials"])
        assert row["expires"] == expected_expiry
    log = result.stdout + result.stderr
    assert "3 passes written" in log
    for row in rows:
        assert row["ho_ten"] not in log and row["subject_id"] not in log and row["pass_id"] not in log


@pytest.mark.parametrize("header, rows, message", [
    (["subject_id", "name"], [["hn-1", "An"]], "missing column(s) initials"),
    (["subject_id", "initials"], [["hn-1", "N.A"], ["hn-2", "ABCDEFGHIJ"]], "line 3: initials: must be 1 to 8"),
    (["subject_id", "initials", "pass_id"], [["hn-1", "N.A", "zz"]], "line 2: pass_id: not hexadecimal"),
    (["subject_id", "initials", "pass_id"], [["hn-1", "N.A", "0a0b"], ["hn-2", "B", "0A0B"]],
     "line 3: pass_id repeats the one on line 2"),
    (["subject_id", "initials"], [["hn-1", "N.A", "extra"]], "line 2: more cells than the header"),
    (["subject_id", "initials"], [], "no rows below the header"),
    (["subject_id", "initials", "initials"], [["hn-1", "A", "B"]], "named twice"),
])
def test_pass_batch_refuses_a_bad_csv_and_writes_nothing(issuer_files, tmp_path, header, rows, message) -> None:
    requests = write_csv(tmp_path / "requests.csv", header, rows)
    out, pdf = tmp_path / "out.csv", tmp_path / "cards.pdf"
    result = issuer("pass", "batch", "--key", issuer_files["key"], "--issuer", "VN-HN", "--csv", requests,
                    "--valid-days", "90", "--out-csv", out, "--cards", pdf, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr and "requests.csv" in result.stderr
    assert "ABCDEFGHIJ" not in result.stderr
    assert not out.exists() and not pdf.exists()


def test_pass_batch_refuses_a_csv_that_is_not_utf8(issuer_files, tmp_path) -> None:
    requests = write_csv(tmp_path / "requests.csv", ["subject_id", "initials"], [["hn-1", "Đ.V.B"]],
                         encoding="cp1258")
    result = issuer("pass", "batch", "--key", issuer_files["key"], "--issuer", "VN-HN", "--csv", requests,
                    "--valid-days", "90", "--out-csv", tmp_path / "out.csv", cwd=tmp_path)
    assert result.returncode == 1
    assert "not UTF-8" in result.stderr


# ---- cards ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch_out(issuer_files):
    directory = issuer_files["directory"]
    requests = write_csv(directory / "requests.csv", ["subject_id", "initials", "ward"],
                         [["hn-c1", "Đ.T.H", "Phúc Xá"], ["hn-c2", "N.V.K", "Đội Cấn"]])
    out = directory / "passes.csv"
    result = issuer("pass", "batch", "--key", issuer_files["key"], "--issuer", "VN-HN", "--csv", requests,
                    "--valid-days", "30", "--out-csv", out, cwd=directory)
    assert result.returncode == 0, result.stderr
    return out


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True, timeout=60).stdout


def test_cards_prints_the_verified_passes_of_a_batch(issuer_files, batch_out, tmp_path) -> None:
    pdf = tmp_path / "cards.pdf"
    result = issuer("cards", "--csv", batch_out, "--trust", issuer_files["trust"], "--out", pdf, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert pdf.read_bytes().startswith(b"%PDF-")
    text = " ".join(pdf_text(pdf).split())
    for row in read_csv(batch_out):
        assert row["initials"] in text and row["expires"] in text and f"Phường/xã: {row['ward']}" in text
    assert "2 cards written" in result.stdout


def test_cards_refuses_passes_the_trust_anchors_do_not_accept(batch_out, tmp_path) -> None:
    _, stranger_trust = new_key(tmp_path, "VN-HCM")
    pdf = tmp_path / "cards.pdf"
    result = issuer("cards", "--csv", batch_out, "--trust", stranger_trust, "--out", pdf, cwd=tmp_path)
    assert result.returncode == 1
    assert f"line 2: the pass is rejected: {Reason.UNKNOWN_ISSUER} (kid)" in result.stderr
    assert not pdf.exists()


def test_cards_refuses_a_tampered_pass(issuer_files, batch_out, tmp_path) -> None:
    rows = read_csv(batch_out)
    body = rows[1]["pass"]
    rows[1]["pass"] = body[:40] + ("A" if body[40] != "A" else "B") + body[41:]
    tampered = write_csv(tmp_path / "tampered.csv", list(rows[0]), [list(row.values()) for row in rows])
    result = issuer("cards", "--csv", tampered, "--trust", issuer_files["trust"], "--out", tmp_path / "c.pdf",
                    cwd=tmp_path)
    assert result.returncode == 1
    assert "line 3: the pass is rejected" in result.stderr
    assert not (tmp_path / "c.pdf").exists()


def test_cards_needs_a_pass_column_and_trust(issuer_files, tmp_path) -> None:
    requests = write_csv(tmp_path / "requests.csv", ["subject_id", "initials"], [["hn-1", "A"]])
    result = issuer("cards", "--csv", requests, "--trust", issuer_files["trust"], "--out", tmp_path / "c.pdf",
                    cwd=tmp_path)
    assert result.returncode == 1 and "missing column(s) pass" in result.stderr
    result = issuer("cards", "--csv", requests, "--out", tmp_path / "c.pdf", cwd=tmp_path)
    assert result.returncode == 2 and "--trust" in result.stderr
    result = issuer("cards", "--csv", tmp_path / "absent.csv", "--trust", issuer_files["trust"],
                    "--out", tmp_path / "c.pdf", cwd=tmp_path)
    assert result.returncode == 1 and "absent.csv" in result.stderr
