"""Printed pass cards for people without smartphones: A4 sheets of ID-1 cards, ten to a page.

Each card (85.6 x 53.98 mm, the bank-card size that fits a wallet) carries the pass's QR code, the
holder's initials, the pass id, the last valid day and a short instruction in Vietnamese. Ward offices
print the sheets at actual size, cut along the thin borders and hand the cards out.

The QR code is drawn as vector rectangles from segno's module matrix, so it is as sharp as the printer
allows at any resolution. Layout figures are in millimetres from a page's or card's top-left corner,
as a rendered page image is read; ``card_box`` and ``QR_BOX`` tell a test where to look.

Text is set in DejaVu Sans (Debian package fonts-dejavu-core), which has every Vietnamese letter;
PDF's built-in fonts have none of them.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import segno
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from .batch import display_date

PAGE_WIDTH_MM, PAGE_HEIGHT_MM = 210.0, 297.0  # A4
CARD_WIDTH_MM, CARD_HEIGHT_MM = 85.6, 53.98  # ISO/IEC 7810 ID-1
COLUMNS, ROWS = 2, 5
CARDS_PER_PAGE = COLUMNS * ROWS
GRID_LEFT_MM = (PAGE_WIDTH_MM - COLUMNS * CARD_WIDTH_MM) / 2
GRID_TOP_MM = (PAGE_HEIGHT_MM - ROWS * CARD_HEIGHT_MM) / 2

QUIET_ZONE_MODULES = 4  # ISO/IEC 18004 asks for four light modules around the symbol
MIN_SYMBOL_MM = 30.0  # the provincial guidance: a printed code at least 3 cm wide
# 0.4 mm is about five dots of a 300 dpi office printer, and still two pixels for a gate camera
# that sees the card 15 cm away; smaller modules blur into each other on cheap paper.
MIN_MODULE_MM = 0.4
QR_ERROR_LEVEL = "m"  # 15 % recovery; segno raises it when the text fits the same version anyway

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_PACKAGE = "fonts-dejavu-core"
REGULAR, BOLD, MONO = "DejaVuSans", "DejaVuSans-Bold", "DejaVuSansMono"

TITLE = "THẺ QUÉT MÃ QR – qrgate"
INSTRUCTION = "Đưa mã QR này trước camera tại cổng kiểm soát. Giữ yên 1–2 giây."
LOST_CARD = "Mất thẻ: báo ngay UBND phường/xã để khóa thẻ."
LABEL_HOLDER = "Chủ thẻ"
LABEL_PASS_ID = "Mã thẻ"
LABEL_EXPIRES = "Có giá trị đến hết ngày"
LABEL_ISSUER = "Đơn vị cấp"
LABEL_HOUSEHOLD = "Hộ"
LABEL_WARD = "Phường/xã"
PAGE_FOOTER = (
    "In đúng kích thước thực (tỉ lệ 100%), không chọn “Vừa trang”. Cắt theo đường viền mảnh. "
    "Trang {page}/{pages}"
)

GREY = 0.35
BORDER_GREY = 0.6
CROP_MARK_MM, CROP_MARK_GAP_MM = 4.0, 2.0


@dataclass(frozen=True)
class Box:
    """A rectangle in millimetres, measured from the top-left corner of its page or card."""

    left: float
    top: float
    width: float
    height: float


# The QR code's square, quiet zone included; the symbol is centred in it. Below the title, on the left.
QR_BOX = Box(left=2.0, top=CARD_HEIGHT_MM - 2.0 - 38.0, width=38.0, height=38.0)
TEXT_LEFT_MM = QR_BOX.left + QR_BOX.width + 1.5
TEXT_RIGHT_MM = CARD_WIDTH_MM - 3.0
CARD_PADDING_MM = 3.0


@dataclass(frozen=True)
class Card:
    """What one card shows. Only initials identify the holder: a lost card gives away no name."""

    pass_text: str
    pass_id: str  # lower-case hex
    expires: int  # epoch seconds
    issuer: str
    initials: str | None = None
    household: str | None = None
    ward: str | None = None


@dataclass(frozen=True)
class QrGeometry:
    """How a pass's QR code is printed on a card."""

    version: str  # segno's designator, e.g. "9-M"
    modules: int  # symbol width in modules
    module_mm: float
    symbol_mm: float


def pass_qr(text: str) -> segno.QRCode:
    """The QR code every printed form of a pass uses (cards and ``pass mint --png``)."""
    return segno.make_qr(text, error=QR_ERROR_LEVEL)


def qr_geometry(qr: segno.QRCode) -> QrGeometry:
    """The printed size of ``qr`` on a card; ValueError if it would print under 3 cm or with modules under 0.4 mm.

    The quiet-zone square has a fixed size, so longer texts get smaller modules: a version-9 pass
    (53 modules) prints at 0.62 mm per module, a 33 mm symbol.
    """
    modules = len(qr.matrix)  # the matrix holds the symbol alone, without a quiet zone
    module_mm = QR_BOX.width / (modules + 2 * QUIET_ZONE_MODULES)
    geometry = QrGeometry(version=qr.designator, modules=modules, module_mm=module_mm, symbol_mm=module_mm * modules)
    if module_mm < MIN_MODULE_MM:
        raise ValueError(
            f"pass too long for a card: QR version {qr.designator} would print {module_mm:.2f} mm modules, "
            f"below {MIN_MODULE_MM} mm"
        )
    if geometry.symbol_mm < MIN_SYMBOL_MM:
        raise ValueError(
            f"text too short to be a pass: QR version {qr.designator} would print {geometry.symbol_mm:.1f} mm wide"
        )
    return geometry


def card_box(index: int) -> tuple[int, Box]:
    """The page (0-based) and place on it of the card at ``index`` in print order (rows, left to right)."""
    page, slot = divmod(index, CARDS_PER_PAGE)
    row, column = divmod(slot, COLUMNS)
    return page, Box(
        left=GRID_LEFT_MM + column * CARD_WIDTH_MM,
        top=GRID_TOP_MM + row * CARD_HEIGHT_MM,
        width=CARD_WIDTH_MM,
        height=CARD_HEIGHT_MM,
    )


def cards_pdf(cards: Sequence[Card]) -> bytes:
    """An A4 PDF with ``cards`` in order, ten to a page; ValueError if a pass cannot print scannable or its
    expiry is no printable date."""
    if not cards:
        raise ValueError("no cards to print")
    for card in cards:
        display_date(card.expires)  # an expiry no calendar can show is refused before a page is drawn
    qr_codes = [pass_qr(card.pass_text) for card in cards]
    geometries = [qr_geometry(qr) for qr in qr_codes]
    _register_fonts()
    buffer = io.BytesIO()
    pdf = Canvas(buffer, pagesize=(PAGE_WIDTH_MM * mm, PAGE_HEIGHT_MM * mm), pageCompression=1)
    pdf.setTitle("qrgate pass cards")
    pdf.setCreator("qrgate-issuer")
    pages = -(-len(cards) // CARDS_PER_PAGE)
    for page in range(pages):
        first = page * CARDS_PER_PAGE
        on_page = range(first, min(first + CARDS_PER_PAGE, len(cards)))
        _draw_crop_marks(pdf)
        _draw_footer(pdf, page + 1, pages)
        for index in on_page:
            _, box = card_box(index)
            _draw_card(pdf, box, cards[index], qr_codes[index], geometries[index])
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


@functools.cache
def _register_fonts() -> None:
    for name in (REGULAR, BOLD, MONO):
        path = FONT_DIR / f"{name}.ttf"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: font missing; cards need DejaVu Sans for Vietnamese text: "
                f"install the Debian package {FONT_PACKAGE} (apt-get install {FONT_PACKAGE})"
            )
        pdfmetrics.registerFont(TTFont(name, str(path)))


class _CardPen:
    """Draws on one card in card millimetres from its top-left corner (ReportLab's origin is bottom-left)."""

    def __init__(self, pdf: Canvas, card: Box) -> None:
        self.pdf = pdf
        self.card = card

    def x(self, left_mm: float) -> float:
        return float((self.card.left + left_mm) * mm)

    def y(self, top_mm: float) -> float:
        return float((PAGE_HEIGHT_MM - self.card.top - top_mm) * mm)

    def text(self, left_mm: float, baseline_mm: float, value: str, font: str, size: float, grey: float = 0.0) -> None:
        self.pdf.setFillGray(grey)
        self.pdf.setFont(font, size)
        self.pdf.drawString(self.x(left_mm), self.y(baseline_mm), value)

    def fitted(self, value: str, font: str, size: float, width_mm: float) -> str:
        """``value`` cut short with an ellipsis where it would run past ``width_mm``."""
        if pdfmetrics.stringWidth(value, font, size) <= width_mm * mm:
            return value
        while value and pdfmetrics.stringWidth(value + "…", font, size) > width_mm * mm:
            value = value[:-1]
        return value.rstrip() + "…"


def _draw_card(pdf: Canvas, box: Box, card: Card, qr: segno.QRCode, geometry: QrGeometry) -> None:
    pen = _CardPen(pdf, box)
    pdf.setStrokeGray(BORDER_GREY)
    pdf.setLineWidth(0.3)
    pdf.rect(pen.x(0), pen.y(box.height), box.width * mm, box.height * mm, stroke=1, fill=0)

    full_width = CARD_WIDTH_MM - 2 * CARD_PADDING_MM
    pen.text(CARD_PADDING_MM, 6.0, pen.fitted(TITLE, BOLD, 9.5, full_width), BOLD, 9.5)
    origin = [f"{LABEL_ISSUER}: {card.issuer}"]
    if card.household:
        origin.append(f"{LABEL_HOUSEHOLD}: {card.household}")
    if card.ward:
        origin.append(f"{LABEL_WARD}: {card.ward}")
    pen.text(CARD_PADDING_MM, 10.5, pen.fitted(" · ".join(origin), REGULAR, 6.5, full_width), REGULAR, 6.5, GREY)

    _draw_qr(pen, qr, geometry)

    column = TEXT_RIGHT_MM - TEXT_LEFT_MM
    pen.text(TEXT_LEFT_MM, 16.2, LABEL_HOLDER, REGULAR, 6.0, GREY)
    pen.text(TEXT_LEFT_MM, 21.2, pen.fitted(card.initials or "—", BOLD, 13.0, column), BOLD, 13.0)
    pen.text(TEXT_LEFT_MM, 25.0, LABEL_PASS_ID, REGULAR, 6.0, GREY)
    # 16 bytes are 32 hex digits: two lines of four groups, easy to read out over the phone.
    groups = [card.pass_id[i:i + 4] for i in range(0, len(card.pass_id), 4)]
    for line, start in enumerate(range(0, len(groups), 4)):
        pen.text(TEXT_LEFT_MM, 27.9 + 2.8 * line, " ".join(groups[start:start + 4]), MONO, 7.5)
    pen.text(TEXT_LEFT_MM, 34.6, LABEL_EXPIRES, REGULAR, 6.0, GREY)
    pen.text(TEXT_LEFT_MM, 38.6, display_date(card.expires), BOLD, 10.5)

    lines = simpleSplit(INSTRUCTION, REGULAR, 6.3, column * mm) + simpleSplit(LOST_CARD, REGULAR, 6.3, column * mm)
    baseline = CARD_HEIGHT_MM - 2.2 - 2.6 * (len(lines) - 1)
    for line_text in lines:
        pen.text(TEXT_LEFT_MM, baseline, line_text, REGULAR, 6.3)
        baseline += 2.6


def _draw_qr(pen: _CardPen, qr: segno.QRCode, geometry: QrGeometry) -> None:
    """The symbol as one filled path of dark runs, centred in ``QR_BOX`` (its margin is the quiet zone)."""
    module = geometry.module_mm
    left = QR_BOX.left + (QR_BOX.width - geometry.symbol_mm) / 2
    top = QR_BOX.top + (QR_BOX.height - geometry.symbol_mm) / 2
    path = pen.pdf.beginPath()
    for row_index, row in enumerate(qr.matrix):
        column = 0
        while column < len(row):
            if not row[column]:
                column += 1
                continue
            run_start = column
            while column < len(row) and row[column]:
                column += 1
            path.rect(
                pen.x(left + run_start * module), pen.y(top + (row_index + 1) * module),
                (column - run_start) * module * mm, module * mm,
            )
    pen.pdf.setFillGray(0.0)
    pen.pdf.drawPath(path, stroke=0, fill=1)


def _draw_crop_marks(pdf: Canvas) -> None:
    """Short lines in the page margin on every cutting line, for a guillotine or a ruler."""
    pdf.setStrokeGray(0.0)
    pdf.setLineWidth(0.3)
    grid_right = GRID_LEFT_MM + COLUMNS * CARD_WIDTH_MM
    grid_bottom = GRID_TOP_MM + ROWS * CARD_HEIGHT_MM

    def line(x1: float, top1: float, x2: float, top2: float) -> None:
        pdf.line(x1 * mm, (PAGE_HEIGHT_MM - top1) * mm, x2 * mm, (PAGE_HEIGHT_MM - top2) * mm)

    for column in range(COLUMNS + 1):
        x = GRID_LEFT_MM + column * CARD_WIDTH_MM
        line(x, GRID_TOP_MM - CROP_MARK_GAP_MM, x, GRID_TOP_MM - CROP_MARK_GAP_MM - CROP_MARK_MM)
        line(x, grid_bottom + CROP_MARK_GAP_MM, x, grid_bottom + CROP_MARK_GAP_MM + CROP_MARK_MM)
    for row in range(ROWS + 1):
        top = GRID_TOP_MM + row * CARD_HEIGHT_MM
        line(GRID_LEFT_MM - CROP_MARK_GAP_MM, top, GRID_LEFT_MM - CROP_MARK_GAP_MM - CROP_MARK_MM, top)
        line(grid_right + CROP_MARK_GAP_MM, top, grid_right + CROP_MARK_GAP_MM + CROP_MARK_MM, top)


def _draw_footer(pdf: Canvas, page: int, pages: int) -> None:
    pdf.setFillGray(GREY)
    pdf.setFont(REGULAR, 7.0)
    pdf.drawCentredString(PAGE_WIDTH_MM / 2 * mm, 5.0 * mm, PAGE_FOOTER.format(page=page, pages=pages))
