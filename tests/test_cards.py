"""Printed pass cards: CSV -> passes -> A4 PDF -> page images -> the gate's decoder -> the gate's verifier.

The PDF is rendered back with poppler's ``pdftoppm`` at print-like resolutions, every card cell is cut
out where the layout puts it, and each must decode (with the daemon's own decoder) to exactly its row's
pass, which the gate's verifier accepts. The text is read back with ``pdftotext``.
"""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest

from qrgate.decoding.factory import build_decoder
from qrgate.passes.trust import TrustStore
from qrgate.passes.verdict import Reason
from qrgate.passes.verifier import PassVerifier
from qrgate_provisioning import cards
from qrgate_provisioning.batch import mint_pass, pass_request
from qrgate_provisioning.cards import (
    CARDS_PER_PAGE,
    PAGE_HEIGHT_MM,
    PAGE_WIDTH_MM,
    Card,
    card_box,
    cards_pdf,
    pass_qr,
    qr_geometry,
)
from qrgate_provisioning.keys import new_issuer_key, write_issuer_files

ISSUER = "VN-HN"
VALID_DAYS = 180
VIETNAM = dt.timezone(dt.timedelta(hours=7))
INSTRUCTION = "Đưa mã QR này trước camera tại cổng kiểm soát. Giữ yên 1–2 giây."
TITLE = "THẺ QUÉT MÃ QR – qrgate"
DARK = 128  # grey level below which a rendered pixel counts as ink
QUIET_ZONE_MODULES = 4
GIVEN_PASS_ID = "00112233445566778899aabbccddeeff"

# Invented holders: the names exist only to prove they never reach the card or the log.
HOLDERS = [
    ("hn-a1", "N.T.A", "Nguyễn Thị Ánh", "H-0042", "Phúc Xá"),
    ("hn-a2", "Đ.V.B", "Đặng Văn Bình", "H-0042", "Phúc Xá"),
    ("hn-a3", "L.T.C", "Lê Thị Cúc", "H-0043", "Trúc Bạch, Ba Đình"),
    ("hn-a4", "T.Ư", "Trần Ưng", "H-0044", "Trúc Bạch, Ba Đình"),
    ("hn-a5", "P.Q.Đ", "Phạm Quốc Đạt", "H-0045", "Quán Thánh"),
    ("hn-a6", "V.T.Ê", "Vũ Thị Ên", "", ""),
    ("hn-a7", "H.M.Y", "Hoàng Minh Ý", "H-0046", "Quán Thánh"),
    ("hn-a8", "B.T.Ơ", "Bùi Thị Ơn", "H-0046", "Quán Thánh"),
    ("hn-a9", "Đ.T.H", "Đỗ Thanh Hải", "H-0047", "Điện Biên"),
    ("hn-a10", "N.V.K", "Ngô Văn Khải", "H-0048", "Điện Biên"),
    ("hn-a11", "L.M.Ạ", "Lý Mỹ Ạnh", "H-0049", "Đội Cấn"),
    ("hn-a12", "C.T.X", "Cao Thị Xuân", "H-0050", "Đội Cấn"),
]


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    """The ward office's round: key, CSV of 12 holders, ``qrgate-issuer pass batch --cards``."""
    directory = tmp_path_factory.mktemp("cards")
    key = new_issuer_key(ISSUER, "EdDSA")
    files = write_issuer_files(key, directory / "issuer", formats=["qrgate"])
    requests = directory / "requests.csv"
    with requests.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["subject_id", "initials", "ho_ten", "household", "ward", "pass_id"])
        for index, (subject, initials, name, household, ward) in enumerate(HOLDERS):
            writer.writerow([subject, initials, name, household, ward, GIVEN_PASS_ID if index == 4 else ""])
    out_csv, pdf = directory / "passes.csv", directory / "cards.pdf"
    result = subprocess.run(
        [sys.executable, "-m", "qrgate_provisioning.cli", "pass", "batch", "--key", str(files["private_key"]),
         "--issuer", ISSUER, "--csv", str(requests), "--valid-days", str(VALID_DAYS),
         "--out-csv", str(out_csv), "--cards", str(pdf)],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with out_csv.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    return {"pdf": pdf, "rows": rows, "trust": files["trust"], "log": result.stdout + result.stderr,
            "directory": directory}


def render(pdf: Path, dpi: int, directory: Path) -> list[np.ndarray]:
    prefix = directory / f"page-{dpi}"
    subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(pdf), str(prefix)], check=True, timeout=60)
    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in sorted(directory.glob(f"page-{dpi}-*.png"))]


def cell(pages: list[np.ndarray], index: int, dpi: int) -> np.ndarray:
    page, box = card_box(index)
    px = dpi / 25.4
    return pages[page][round(box.top * px):round((box.top + box.height) * px),
                       round(box.left * px):round((box.left + box.width) * px)]


@pytest.fixture(scope="module")
def pages(issued):
    return {dpi: render(issued["pdf"], dpi, issued["directory"]) for dpi in (150, 100)}


@pytest.fixture(scope="module")
def verifier(issued):
    return PassVerifier(TrustStore.from_paths([issued["trust"]]))


@pytest.mark.parametrize("dpi", [150, 100])
def test_every_card_scans_to_its_own_pass_and_the_gate_accepts_it(issued, pages, verifier, dpi) -> None:
    decoder = build_decoder()
    assert len(pages[dpi]) == 2  # 12 cards, ten to a page
    now = time.time()
    for index, row in enumerate(issued["rows"]):
        codes = decoder.decode(cell(pages[dpi], index, dpi))
        assert [code.text for code in codes] == [row["pass"]], f"card {index} at {dpi} dpi"
        verdict = verifier.verify(codes[0].text, now)
        assert verdict.accepted, (index, verdict)
        assert verdict.pass_id == row["pass_id"]
        assert verdict.subject_id == HOLDERS[index][0]
        assert verdict.initials == HOLDERS[index][1]
    assert issued["rows"][4]["pass_id"] == GIVEN_PASS_ID
    assert len({row["pass_id"] for row in issued["rows"]}) == len(HOLDERS)


def test_cells_after_the_last_card_are_blank(pages) -> None:
    rendered = pages[150]
    for index in range(len(HOLDERS), 2 * CARDS_PER_PAGE):
        assert not (cell(rendered, index, 150) < DARK).any(), f"cell {index} should be empty"


def test_the_printed_symbol_is_at_least_30mm_inside_a_clear_quiet_zone(issued, pages) -> None:
    dpi = 150
    px_per_mm = dpi / 25.4
    decoder = build_decoder()
    for index, row in enumerate(issued["rows"]):
        card = cell(pages[dpi], index, dpi)
        (code,) = decoder.decode(card)
        xs, ys = [x for x, _ in code.corners], [y for _, y in code.corners]
        # The symbol's ink, looked for a little beyond the corners the decoder reports.
        top, left = max(min(ys) - 3, 0), max(min(xs) - 3, 0)
        ink_rows, ink_columns = np.nonzero(card[top:max(ys) + 4, left:max(xs) + 4] < DARK)
        y0, y1 = top + ink_rows.min(), top + ink_rows.max() + 1
        x0, x1 = left + ink_columns.min(), left + ink_columns.max() + 1
        width_mm, height_mm = (x1 - x0) / px_per_mm, (y1 - y0) / px_per_mm
        assert width_mm >= 30.0 and height_mm >= 30.0, (index, width_mm, height_mm)
        modules = pass_qr(row["pass"]).symbol_size(border=0)[0]
        module_px = (x1 - x0) / modules
        assert module_px / px_per_mm >= 0.4
        # Four modules of blank paper all round, and still on the card (cut along its border).
        quiet = round(QUIET_ZONE_MODULES * module_px)
        assert y0 - quiet >= 1 and x0 - quiet >= 1 and y1 + quiet < card.shape[0] - 1 and x1 + quiet < card.shape[1] - 1
        surround = card[y0 - quiet:y1 + quiet, x0 - quiet:x1 + quiet].copy()
        surround[quiet:-quiet, quiet:-quiet] = 255
        assert not (surround < DARK).any(), f"ink in the quiet zone of card {index}"


def card_text(pdf: Path, index: int) -> str:
    """The text ``pdftotext`` reads inside one card's cell (cropping in PDF points, 72 per inch)."""
    page, box = card_box(index)
    pt = 72 / 25.4
    result = subprocess.run(
        ["pdftotext", "-f", str(page + 1), "-l", str(page + 1),
         "-x", str(round(box.left * pt)), "-y", str(round(box.top * pt)),
         "-W", str(round(box.width * pt)), "-H", str(round(box.height * pt)), str(pdf), "-"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return " ".join(result.stdout.split())


def test_each_card_prints_holder_pass_id_expiry_and_the_vietnamese_instruction(issued) -> None:
    last_day = dt.datetime.now(VIETNAM).date() + dt.timedelta(days=VALID_DAYS)
    expiry = last_day.strftime("%d/%m/%Y")
    for index, row in enumerate(issued["rows"]):
        text = card_text(issued["pdf"], index)
        assert unicodedata.is_normalized("NFC", text)
        assert TITLE in text
        assert INSTRUCTION in text, text
        assert f"Chủ thẻ {HOLDERS[index][1]}" in text
        pass_id = row["pass_id"]
        assert " ".join(pass_id[i:i + 4] for i in range(0, 32, 4)) in text
        assert f"Có giá trị đến hết ngày {expiry}" in text
        assert row["expires"] == expiry
        household, ward = HOLDERS[index][3], HOLDERS[index][4]
        if household:
            assert f"Hộ: {household}" in text and f"Phường/xã: {ward}" in text
        else:
            assert "Hộ:" not in text


def test_no_full_name_reaches_the_cards_or_the_log(issued) -> None:
    document = subprocess.run(["pdftotext", str(issued["pdf"]), "-"], capture_output=True, text=True,
                              check=True, timeout=60).stdout
    for subject, _, name, _, _ in HOLDERS:
        assert name not in document
        assert name not in issued["log"] and subject not in issued["log"]


def test_a_pass_expires_at_the_end_of_its_printed_day(issued, verifier) -> None:
    last_day = dt.datetime.now(VIETNAM).date() + dt.timedelta(days=VALID_DAYS)
    end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), VIETNAM).timestamp()
    text = issued["rows"][0]["pass"]
    assert verifier.verify(text, end - 1).expires == end - 1
    strict = PassVerifier(TrustStore.from_paths([issued["trust"]]), clock_skew_s=0)
    assert strict.verify(text, end - 1).accepted
    assert strict.verify(text, end).reason is Reason.EXPIRED


def test_a_minted_pass_prints_30mm_wide_with_modules_of_at_least_04mm() -> None:
    key = new_issuer_key(ISSUER, "ES256")
    now = time.time()
    typical = mint_pass(key, ISSUER, pass_request("hn-3f9a1c0d2e", "Đ.T.H", None), now=now, valid_days=365)
    qr = pass_qr(typical.text)
    geometry = qr_geometry(qr)
    assert qr.version <= 9, qr.designator  # docs/passes.md: a pass with initials is a version-9 code
    assert geometry.symbol_mm >= 30.0 and geometry.module_mm >= 0.4
    # Every field at the longest the gate accepts: still a printable card.
    longest = mint_pass(key, "V" * 64, pass_request("s" * 64, "Đ" * 8, "ab" * 32), now=now, valid_days=365)
    longest_geometry = qr_geometry(pass_qr(longest.text))
    assert longest_geometry.symbol_mm >= 30.0 and longest_geometry.module_mm >= 0.4


def test_a_text_too_long_for_a_card_is_refused_before_printing() -> None:
    card = Card(pass_text="QG1:" + "A" * 1200, pass_id="00", expires=0, issuer=ISSUER)
    with pytest.raises(ValueError, match="too long for a card"):
        cards_pdf([card])


def test_a_text_too_short_to_print_3cm_wide_is_refused() -> None:
    card = Card(pass_text="QG1:SHORT", pass_id="00", expires=0, issuer=ISSUER)
    with pytest.raises(ValueError, match="too short to be a pass"):
        cards_pdf([card])


def test_cards_sit_on_the_page_inside_a_printable_margin() -> None:
    boxes = [card_box(index)[1] for index in range(CARDS_PER_PAGE)]
    assert all(card_box(index)[0] == 0 for index in range(CARDS_PER_PAGE)) and card_box(CARDS_PER_PAGE)[0] == 1
    for box in boxes:
        assert box.left >= 10 and box.top >= 10
        assert box.left + box.width <= PAGE_WIDTH_MM - 10 and box.top + box.height <= PAGE_HEIGHT_MM - 10
    for a in boxes:
        for b in boxes:
            if a is not b:
                overlap_x = min(a.left + a.width, b.left + b.width) - max(a.left, b.left)
                overlap_y = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
                assert overlap_x <= 1e-9 or overlap_y <= 1e-9


def test_a_missing_font_names_the_debian_package(monkeypatch, tmp_path) -> None:
    key = new_issuer_key(ISSUER, "EdDSA")
    minted = mint_pass(key, ISSUER, pass_request("hn-x", "N.A", None), now=time.time(), valid_days=30)
    card = Card(pass_text=minted.text, pass_id=minted.request.pass_id.hex(), expires=minted.expires, issuer=ISSUER)
    monkeypatch.setattr(cards, "FONT_DIR", tmp_path)
    cards._register_fonts.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="fonts-dejavu-core"):
            cards_pdf([card])
    finally:
        cards._register_fonts.cache_clear()
