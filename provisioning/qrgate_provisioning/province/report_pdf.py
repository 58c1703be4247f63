"""The daily report as a print-ready A4 PDF in Vietnamese, for the officials who read it on paper.

Page 1 the province's figures (the three questions of the 06:00 directive first: points deployed, scans, places
not complying), then the table by district with its communes, then the places not complying with their reasons,
as many pages as they take (the table's header repeats on each). Every page says "Trang i/N". A4 landscape: the
district table has fourteen columns of figures up to millions, which portrait cannot print legibly.

Text is DejaVu Sans (Debian's fonts-dejavu-core, as the pass cards use): PDF's built-in fonts have no Vietnamese
letters. Numbers are written the Vietnamese way, ``11.421``, dates ``05/03/2025``.
"""

from __future__ import annotations

import functools
import io
from typing import Any
from xml.sax.saxutils import escape

from ..cards import BOLD, FONT_DIR, FONT_PACKAGE, REGULAR
from ..errors import ProvinceError
from .report import REASON_LABELS, REASONS, AreaFigures, DailyReport, zone_of

TITLE = "BÁO CÁO HẰNG NGÀY – HỆ THỐNG QUÉT MÃ QR (qrgate)"
MARGIN_MM = 14
_GRID = 0.35  # points: the ruling of every table
_HEADER_GREY = 0.88


def report_pdf(report: DailyReport) -> bytes:
    """The report as PDF bytes (A4 landscape, Vietnamese)."""
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.units import mm
    from reportlab.platypus import PageBreak, SimpleDocTemplate

    _register_fonts()
    buffer = io.BytesIO()
    page_size = landscape(A4)
    document = SimpleDocTemplate(
        buffer, pagesize=page_size, leftMargin=MARGIN_MM * mm, rightMargin=MARGIN_MM * mm,
        topMargin=MARGIN_MM * mm, bottomMargin=(MARGIN_MM + 4) * mm,
        title=f"Báo cáo hằng ngày {vn_date(report)}", author="qrgate-province", creator="qrgate-province",
    )
    width = page_size[0] - 2 * MARGIN_MM * mm
    story: list[Any] = [*_summary_page(report), PageBreak(), *_district_pages(report, width), PageBreak(),
                        *_non_complying_pages(report, width)]
    document.build(story, canvasmaker=_numbered_canvas(f"qrgate · Báo cáo ngày {vn_date(report)}"))
    return buffer.getvalue()


def vn_date(report: DailyReport) -> str:
    return report.day.strftime("%d/%m/%Y")


def vn_number(value: int) -> str:
    return f"{value:,}".replace(",", ".")  # Vietnamese groups thousands with a dot


@functools.cache
def _register_fonts() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for name in (REGULAR, BOLD):
        path = FONT_DIR / f"{name}.ttf"
        if not path.is_file():
            raise ProvinceError(f"{path}: font missing; the report needs DejaVu Sans for Vietnamese text: "
                                f"install the Debian package {FONT_PACKAGE} (apt-get install {FONT_PACKAGE})")
        pdfmetrics.registerFont(TTFont(name, str(path)))


@functools.cache
def _styles() -> dict[str, Any]:
    from reportlab.lib.styles import ParagraphStyle

    base = ParagraphStyle("body", fontName=REGULAR, fontSize=9, leading=11.5)
    return {
        "title": ParagraphStyle("title", parent=base, fontName=BOLD, fontSize=15, leading=19, spaceAfter=4),
        "subtitle": ParagraphStyle("subtitle", parent=base, fontSize=10.5, leading=14, spaceAfter=10),
        "heading": ParagraphStyle("heading", parent=base, fontName=BOLD, fontSize=12, leading=15, spaceBefore=6,
                                  spaceAfter=6),
        "body": base,
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.5, leading=9),
        "cell_bold": ParagraphStyle("cell_bold", parent=base, fontName=BOLD, fontSize=7.5, leading=9),
        "note": ParagraphStyle("note", parent=base, fontSize=8, leading=10, textColor="#444444", spaceBefore=8),
    }


def _paragraph(text: str, style: str = "body") -> Any:
    from reportlab.platypus import Paragraph

    return Paragraph(escape(text), _styles()[style])


def _table(rows: list[list[Any]], widths: list[float], *, numeric_from: int | None, bold_rows: tuple[int, ...] = (),
           font_size: float = 7.5) -> Any:
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=widths, repeatRows=1)
    commands: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, -1), REGULAR, font_size),
        ("FONT", (0, 0), (-1, 0), BOLD, font_size),
        ("BACKGROUND", (0, 0), (-1, 0), colors.Color(_HEADER_GREY, _HEADER_GREY, _HEADER_GREY)),
        ("GRID", (0, 0), (-1, -1), _GRID, colors.black),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
    if numeric_from is not None:  # figures from this column on, right-aligned so that their digits line up
        commands.append(("ALIGN", (numeric_from, 1), (-1, -1), "RIGHT"))
    commands += [("FONT", (0, row), (-1, row), BOLD, font_size) for row in bold_rows]
    table.setStyle(TableStyle(commands))
    return table


def _summary_page(report: DailyReport) -> list[Any]:
    from reportlab.lib.units import mm

    scans = report.scans
    figures = [
        ("Số điểm kiểm soát (địa điểm) đã đăng ký", report.places_registered),
        ("   trong đó bắt buộc có cổng quét mã", report.places_requiring_gate),
        ("Số địa điểm đã lắp cổng quét mã", report.places_with_gate),
        ("Số cổng đã đăng ký", report.gates_registered),
        ("Số cổng hoạt động trong ngày", report.gates_working),
        ("Tổng số lượt quét", scans.total),
        ("   được chấp nhận", scans.accepted),
        ("   định danh bằng CCCD gắn chip", scans.identified),
        ("   bị từ chối", scans.rejected),
        ("   chiều vào", scans.inbound),
        ("   chiều ra", scans.outbound),
        ("Lượt quét tại điểm chưa đăng ký", report.scans_unregistered.total),
        ("Thiết bị chưa đăng ký có hoạt động", report.unregistered_devices_heard),
        ("Số địa điểm không tuân thủ", report.places_non_complying),
    ]
    rows: list[list[Any]] = [["Chỉ tiêu", "Số liệu"]] + [[label, vn_number(value)] for label, value in figures]
    reason_counts = {code: sum(code in place.reasons for place in report.non_complying) for code in REASONS}
    reason_rows: list[list[Any]] = [["Lý do không tuân thủ", "Số địa điểm"]]
    reason_rows += [[REASON_LABELS["vi"][code], vn_number(count)] for code, count in reason_counts.items()]
    limit = f"{report.offline_hours_limit:g}".replace(".", ",")
    built = report.built_at.astimezone(zone_of(report.timezone))  # the officials' clock, not UTC
    return [
        _paragraph(TITLE, "title"),
        _paragraph(f"Ngày {vn_date(report)} (giờ {report.timezone}, từ 00:00 đến 24:00) · lập lúc "
                   f"{built.strftime('%H:%M %d/%m/%Y')}", "subtitle"),
        _table(rows, [120 * mm, 40 * mm], numeric_from=1, bold_rows=(1, 6, 14), font_size=9.5),
        _paragraph("Phân loại địa điểm không tuân thủ", "heading"),
        _table(reason_rows, [120 * mm, 40 * mm], numeric_from=1, font_size=9.5),
        _paragraph(
            "Chỉ xét các địa điểm bắt buộc có cổng. Một địa điểm có thể có nhiều lý do. "
            f"«{REASON_LABELS['vi']['gate_offline']}»: tất cả các cổng của địa điểm cùng mất kết nối quá {limit} "
            f"giờ trong giờ mở cửa. «{REASON_LABELS['vi']['clock_unsynchronised']}»: có lượt quét khi đồng hồ "
            "của cổng chưa được đồng bộ, thời gian của lượt quét đó không tin cậy được.", "note"),
    ]


_AREA_HEADERS = ["Quận/huyện, xã/phường", "Địa điểm", "Bắt buộc có cổng", "Đã có cổng", "Không tuân thủ", "Cổng",
                 "Cổng hoạt động", "Lượt quét", "Chấp nhận", "Định danh", "Từ chối", "Chiều vào", "Chiều ra"]


def _district_pages(report: DailyReport, width: float) -> list[Any]:
    header = [_paragraph(text, "cell_bold") for text in _AREA_HEADERS]
    rows: list[list[Any]] = [header]
    bold_rows = []
    for district in report.districts:
        bold_rows.append(len(rows))
        rows.append(_area_row(district.district, district))
        rows += [_area_row("    " + commune.commune, commune) for commune in report.communes
                 if commune.district == district.district and commune.commune is not None]
    first = width * 0.22
    numbers = (width - first) / (len(_AREA_HEADERS) - 1)
    return [_paragraph("Số liệu theo quận/huyện và xã/phường", "heading"),
            _table(rows, [first] + [numbers] * (len(_AREA_HEADERS) - 1), numeric_from=1,
                   bold_rows=tuple(bold_rows))]


def _area_row(label: str, area: AreaFigures) -> list[Any]:
    scans = area.scans
    values = [area.places_registered, area.places_requiring_gate, area.places_with_gate, area.places_non_complying,
              area.gates_registered, area.gates_working, scans.total, scans.accepted, scans.identified,
              scans.rejected, scans.inbound, scans.outbound]
    return [_paragraph(label, "cell"), *(vn_number(value) for value in values)]


def _non_complying_pages(report: DailyReport, width: float) -> list[Any]:
    heading = _paragraph(f"Danh sách địa điểm không tuân thủ ({vn_number(len(report.non_complying))})", "heading")
    if not report.non_complying:
        return [heading, _paragraph("Không có địa điểm nào không tuân thủ trong ngày.")]
    rows: list[list[Any]] = [[_paragraph(text, "cell_bold") for text in
                              ("STT", "Mã địa điểm", "Tên địa điểm", "Quận/huyện", "Xã/phường", "Lý do")]]
    for number, place in enumerate(report.non_complying, start=1):
        reasons = "; ".join(f"{REASON_LABELS['vi'][code]}: {place.detail(code, 'vi')}" for code in place.reasons)
        rows.append([str(number), _paragraph(place.place_id, "cell"), _paragraph(place.name, "cell"),
                     _paragraph(place.district, "cell"), _paragraph(place.commune, "cell"),
                     _paragraph(reasons, "cell")])
    fractions = (0.04, 0.13, 0.22, 0.13, 0.13, 0.35)
    return [heading, _table(rows, [width * part for part in fractions], numeric_from=None)]


def _numbered_canvas(footer: str) -> type:
    """A canvas that holds its pages until the end, so that each can say "Trang i/N"."""
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas

    class NumberedCanvas(Canvas):  # type: ignore[misc]  # reportlab has no type information
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # reportlab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for number, state in enumerate(self._pages, start=1):
                self.__dict__.update(state)
                width, _height = self._pagesize
                self.setFont(REGULAR, 8)
                self.drawString(MARGIN_MM * mm, 9 * mm, footer)
                self.drawRightString(width - MARGIN_MM * mm, 9 * mm, f"Trang {number}/{total}")
                super().showPage()
            super().save()

    return NumberedCanvas
