"""``qrgate verify``: one JSON object on stdout, exit 0 accepted / 1 rejected / 2 usage error."""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno
from cryptography.hazmat.primitives.serialization import Encoding

from qrgate.commands import verify
from qrgate.passes.verdict import PassFormat, Reason, Verdict
from qrgate_provisioning.dcc_test_issuer import (
    RULE_CASE_REASONS,
    dcc_rule_cases,
    dcc_test_set,
    fake_vaccination_payload,
)
from qrgate_provisioning.keys import new_issuer_key, trust_entry, trust_file
from qrgate_provisioning.mint import mint_dcc_pass, mint_qrgate_pass
from qrgate_provisioning.trustlist import build_rule_set, new_list_signer, public_pem

NOW = 1_767_225_600
AT = "2026-01-01T00:00:00Z"
REPORT_KEYS = {"verdict", "reason", "detail", "format", "issuer", "kid", "expires", "rules"}


@pytest.fixture(scope="module")
def test_set():
    return dcc_test_set(NOW)


@pytest.fixture(scope="module")
def trust_dir(tmp_path_factory, test_set):
    directory = tmp_path_factory.mktemp("trust")
    for index, issuer in enumerate(test_set.trusted):
        (directory / f"dsc{index}.pem").write_bytes(issuer.certificate.public_bytes(Encoding.PEM))
    return directory


def run_verify(capsys, *argv: str) -> tuple[int, dict | None, str]:
    parser = argparse.ArgumentParser(prog="qrgate")
    verify.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["verify", *argv])
    code = args.run(args)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else None), err


def test_an_accepted_pass_prints_its_verdict_and_exits_0(capsys, test_set, trust_dir) -> None:
    code, report, _ = run_verify(capsys, "--trust", str(trust_dir), "--at", AT, test_set.passes["valid_ps256"])
    assert code == 0
    assert set(report) == REPORT_KEYS
    ps256 = test_set.trusted[0]
    assert report | {"expires": None} == {
        "verdict": "accepted", "reason": "accepted", "detail": None, "format": "dcc", "issuer": "VN",
        "kid": base64.b64encode(ps256.kid).decode(), "expires": None, "rules": None,
    }
    assert report["expires"] == "2026-06-30T00:00:00Z"  # minted to expire 180 days after NOW


@pytest.mark.parametrize(
    ("case", "reason"),
    [("expired", "expired"), ("forged", "bad_signature"), ("unknown_issuer", "unknown_issuer"),
     ("not_yet_valid", "not_yet_valid")],
)
def test_a_rejected_pass_exits_1_with_its_reason(capsys, test_set, trust_dir, case, reason) -> None:
    code, report, _ = run_verify(capsys, "--trust", str(trust_dir), "--at", AT, test_set.passes[case])
    assert (code, report["verdict"], report["reason"]) == (1, "rejected", reason)


def test_a_url_is_not_a_pass(capsys) -> None:
    code, report, _ = run_verify(capsys, "https://example.com/")
    assert (code, report["reason"], report["format"], report["expires"]) == (1, "not_a_pass", "unknown", None)


def test_without_trust_every_pass_is_from_an_unknown_issuer(capsys, test_set) -> None:
    code, report, _ = run_verify(capsys, "--at", AT, test_set.passes["valid_es256"])
    assert (code, report["reason"], report["detail"]) == (1, "unknown_issuer", "kid")


def test_at_decides_expiry(capsys, test_set, trust_dir) -> None:
    text = test_set.passes["valid_es256"]
    assert run_verify(capsys, "--trust", str(trust_dir), "--at", "2026-06-29T22:59:00+00:00", text)[0] == 0
    assert run_verify(capsys, "--trust", str(trust_dir), "--at", "2026-07-01", text)[1]["reason"] == "expired"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "give the pass TEXT or --image FILE"),
        (("HC1:ABC", "--image", "pass.png"), "not both"),
        (("--trust", "/nonexistent/trust", "HC1:ABC"), "/nonexistent/trust: no such file or directory"),
        (("--image", "/nonexistent/pass.png"), "cannot read the image"),
    ],
)
def test_usage_errors_exit_2_with_a_message(capsys, argv, message) -> None:
    code, report, err = run_verify(capsys, *argv)
    assert (code, report) == (2, None)
    assert message in err


def test_an_unparseable_trust_file_is_a_usage_error(capsys, tmp_path) -> None:
    (tmp_path / "broken.json").write_text("{")
    code, report, err = run_verify(capsys, "--trust", str(tmp_path), "QG1:ABC")
    assert (code, report) == (2, None) and "broken.json: not valid JSON" in err


def test_a_bad_time_is_an_argparse_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        run_verify(capsys, "--at", "tomorrow", "QG1:ABC")
    assert exited.value.code == 2


def test_an_image_of_a_pass_is_decoded_and_verified(capsys, tmp_path) -> None:
    issuer = new_issuer_key("VN-HN", "ES256")
    (tmp_path / "hn.json").write_text(trust_file([trust_entry(issuer)]))
    text = mint_qrgate_pass(issuer, "VN-HN", b"\x07" * 16, "subj-42", NOW - 60, NOW + 3600, initials="TN")
    image = tmp_path / "pass.png"
    segno.make_qr(text, error="m").save(image, scale=6, border=4)
    code, report, _ = run_verify(capsys, "--trust", str(tmp_path / "hn.json"), "--at", AT, "--image", str(image))
    assert (code, report["verdict"], report["format"], report["issuer"]) == (0, "accepted", "qrgate", "VN-HN")


def test_an_image_without_a_code_is_a_usage_error(capsys, tmp_path) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200), 255, np.uint8))
    code, report, err = run_verify(capsys, "--image", str(blank))
    assert (code, report) == (2, None) and "no QR code found" in err


def test_the_module_runs_as_a_command(test_set, trust_dir) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "qrgate.commands.verify", "--trust", str(trust_dir), "--at", AT,
         test_set.passes["forged"]],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["reason"] == "bad_signature"


QA_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "dcc-qa-images"


@pytest.mark.skipif(not QA_IMAGES.is_dir(), reason=f"real issuers' QR images not found at {QA_IMAGES}")
@pytest.mark.parametrize("image", sorted(p.relative_to(QA_IMAGES).as_posix() for p in QA_IMAGES.rglob("*.png"))
                         if QA_IMAGES.is_dir() else [])
def test_real_issuers_codes_read_as_dccs_from_an_issuer_not_trusted_here(capsys, image) -> None:
    # Vietnam's and Singapore's own test passes; their signing keys are not published, so every
    # layer must read (base45, zlib, COSE, kid) and only the trust lookup may refuse them.
    code, report, _ = run_verify(capsys, "--image", str(QA_IMAGES / image))
    assert (code, report["format"], report["reason"], report["detail"]) == (1, "dcc", "unknown_issuer", "kid")
    assert len(base64.b64decode(report["kid"])) == 8


# --- hostile validity windows: a verdict and a report, never a traceback ------------------------------------------


QG_ISSUER = new_issuer_key("VN-HN", "EdDSA")


def _signed(prefix: str, iat: float, exp: float, test_set) -> str:
    """A correctly signed pass of either format with these iat and exp claims."""
    if prefix == "HC1:":
        issuer = test_set.trusted[1]
        return mint_dcc_pass(issuer, issuer.certificate, fake_vaccination_payload("URN:UVCI:01:VN:HOSTILE"), iat, exp)
    return mint_qrgate_pass(QG_ISSUER, "VN-HN", b"\x09" * 16, "subj-9", iat, exp)


@pytest.fixture(scope="module")
def qg_trust(tmp_path_factory):
    path = tmp_path_factory.mktemp("qg") / "hn.json"
    path.write_text(trust_file([trust_entry(QG_ISSUER)]))
    return path


@pytest.mark.parametrize("prefix", ["HC1:", "QG1:"])
@pytest.mark.parametrize("exp", [1e300, 10**12, 2**64, -1e300])
def test_an_absurd_expiry_is_reported_malformed_with_exit_1(capsys, test_set, trust_dir, qg_trust, prefix,
                                                            exp) -> None:
    text = _signed(prefix, NOW - 60, exp, test_set)
    code, report, err = run_verify(capsys, "--trust", str(trust_dir), "--trust", str(qg_trust), "--at", AT, text)
    assert (code, report["verdict"], report["reason"], report["detail"]) == (1, "rejected", "malformed", "claims")
    assert report["expires"] is None and err == ""


@pytest.mark.parametrize("prefix", ["HC1:", "QG1:"])
def test_a_pass_issued_after_it_expires_is_reported_malformed(capsys, test_set, trust_dir, qg_trust, prefix) -> None:
    text = _signed(prefix, NOW + 100, NOW + 50, test_set)  # both ends inside the 300 s clock skew
    code, report, _ = run_verify(capsys, "--trust", str(trust_dir), "--trust", str(qg_trust), "--at", AT, text)
    assert (code, report["reason"], report["detail"]) == (1, "malformed", "claims")


def test_the_command_run_as_a_process_prints_json_for_an_absurd_expiry(test_set, trust_dir) -> None:
    # What the defect was seen as: a traceback on stderr and exit 1 for a pass the verifier had accepted.
    result = subprocess.run(
        [sys.executable, "-m", "qrgate.commands.verify", "--trust", str(trust_dir), "--at", AT,
         _signed("HC1:", NOW - 60, 1e300, test_set)],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stderr) == (1, "")
    assert json.loads(result.stdout)["reason"] == "malformed"


@pytest.mark.parametrize("value", [None, 0, NOW, 10**12, 1e300, -1e300, float("inf"), float("nan"), 2**80])
def test_the_report_prints_any_expiry(value) -> None:
    report = verify._report(Verdict(Reason.MALFORMED, PassFormat.DCC, expires=value))
    assert report["expires"] in (None, "1970-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
    assert (report["expires"] is None) == (value not in (0, NOW))


# --- --rules: the validation rules a gate applies -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rule_cases(test_set):
    return dcc_rule_cases(test_set.trusted[1], NOW)


@pytest.mark.parametrize("case", sorted(RULE_CASE_REASONS))
def test_builtin_rules_judge_each_case_and_report_the_rule(capsys, rule_cases, trust_dir, case) -> None:
    code, report, _ = run_verify(capsys, "--trust", str(trust_dir), "--at", AT, "--rules", "builtin", rule_cases[case])
    expected = RULE_CASE_REASONS[case]
    assert (code, report["reason"]) == (0 if expected == "accepted" else 1, expected)
    assert report["rules"] == {"version": 0, "reason": expected, "rule": report["detail"]}
    assert (report["detail"] is None) == (expected == "accepted")
    if expected != "accepted":
        assert report["detail"].split("-")[1] == "VN"  # a rule Identifier such as TR-VN-0002, nothing of the pass


def test_without_rules_a_genuine_positive_test_is_accepted_and_no_rules_are_reported(capsys, rule_cases, trust_dir):
    code, report, _ = run_verify(capsys, "--trust", str(trust_dir), "--at", AT, rule_cases["test_positive"])
    assert (code, report["reason"], report["rules"]) == (0, "accepted", None)


def test_rules_are_not_reported_for_a_pass_they_never_judged(capsys, test_set, trust_dir) -> None:
    code, report, _ = run_verify(capsys, "--trust", str(trust_dir), "--at", AT, "--rules", "builtin",
                                 test_set.passes["expired"])
    assert (code, report["reason"], report["rules"]) == (1, "expired", None)


def test_a_rule_set_json_file_is_read(capsys, rule_cases, trust_dir, tmp_path) -> None:
    # The built-in set with the PCR window cut from 72 h to 12 h: the 24 h-old PCR test is now too old.
    document = json.loads(resources.files("qrgate").joinpath("data", "rules-vn-2021.json").read_text())
    [pcr_rule] = [rule for rule in document["rules"] if rule["Identifier"] == "TR-VN-0004"]
    pcr_rule["Logic"] = json.loads(json.dumps(pcr_rule["Logic"]).replace("72", "12"))
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(document))
    code, report, _ = run_verify(capsys, "--trust", str(trust_dir), "--at", AT, "--rules", str(path),
                                 rule_cases["test_negative_pcr"])
    assert (code, report["reason"], report["detail"]) == (1, "test_too_old", "TR-VN-0004")
    assert run_verify(capsys, "--trust", str(trust_dir), "--at", AT, "--rules", str(path),
                      rule_cases["test_negative_rapid"])[0] == 0


@pytest.mark.parametrize(("content", "message"), [("{", "rules.json"), ('{"country": "VN"}', "rules.json")])
def test_an_unusable_rule_set_is_a_usage_error(capsys, tmp_path, content, message) -> None:
    path = tmp_path / "rules.json"
    path.write_text(content)
    code, report, err = run_verify(capsys, "--rules", str(path), "HC1:ABC")
    assert (code, report) == (2, None) and message in err


def test_a_missing_rule_set_is_a_usage_error(capsys, tmp_path) -> None:
    code, report, err = run_verify(capsys, "--rules", str(tmp_path / "absent.json"), "HC1:ABC")
    assert (code, report) == (2, None) and "absent.json" in err


def test_a_signed_rule_set_is_verified_against_the_signers(capsys, rule_cases, trust_dir, tmp_path) -> None:
    signer, stranger = new_list_signer("EdDSA"), new_list_signer("EdDSA")
    content = resources.files("qrgate").joinpath("data", "rules-vn-2021.json").read_text()
    document = tmp_path / "rules.cose"
    document.write_bytes(build_rule_set(signer, content, version=7, issued_at=NOW - 60, expires_at=NOW + 86_400))
    for name, key in (("pins", signer), ("strangers", stranger)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "list.pem").write_bytes(public_pem(key))
    common = ("--trust", str(trust_dir), "--at", AT, "--rules", str(document))
    code, report, _ = run_verify(capsys, *common, "--signers", str(tmp_path / "pins"), rule_cases["test_positive"])
    assert (code, report["rules"]) == (1, {"version": 7, "reason": "test_positive", "rule": "TR-VN-0002"})
    code, report, err = run_verify(capsys, *common, "--signers", str(tmp_path / "strangers"),
                                   rule_cases["test_positive"])
    assert (code, report) == (2, None) and "rules.cose" in err
    code, report, err = run_verify(capsys, *common, rule_cases["test_positive"])  # no --signers
    assert (code, report) == (2, None) and "no list keys" in err
