"""The daily report as CSV: a summary block, then one row per place with its figures and reasons.

Headers are Vietnamese with the English key in brackets, so the officials read them and a script can find the
columns. Durations are whole minutes, not decimal hours: Excel under Vietnamese regional settings reads "2.5" as
text or a date (the decimal mark there is a comma), and an integer reads the same everywhere.
"""

from __future__ import annotations

import csv
import io

from .report import REASON_LABELS, DailyReport, PlaceFigures, ScanCounts

# Excel opens a CSV without a byte-order mark in the Windows "ANSI" code page (Windows-1258 on Vietnamese
# Windows) and turns every diacritic into mojibake; with the UTF-8 BOM it reads the file as UTF-8.
BOM = "\ufeff"

PLACE_COLUMNS = (
    "Mã địa điểm (place_id)", "Tên (name)", "Loại (type)", "Quận/huyện (district)", "Xã/phường (commune)",
    "Bắt buộc có cổng (gate_required)", "Giờ mở cửa (opening_hours)", "Số phút mở cửa (open_minutes)",
    "Cổng đăng ký (gates_registered)", "Cổng hoạt động (gates_working)", "Lượt quét (scans)",
    "Chấp nhận (accepted)", "Từ chối (rejected)", "Định danh (identified)", "Chiều vào (in)", "Chiều ra (out)",
    "Đồng hồ chưa đồng bộ (unsynced_checkins)", "Số phút mất kết nối (offline_minutes)",
    "Tuân thủ (complies)", "Lý do (reasons)", "Mã lý do (reason_codes)", "Chi tiết (details)",
)


def report_csv(report: DailyReport) -> str:
    """The report as CSV text, starting with the UTF-8 byte-order mark (write it as UTF-8)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line ends, as Excel writes them
    writer.writerow(["Báo cáo hằng ngày qrgate (daily report)", report.day.isoformat()])
    for label, value in _summary(report):
        writer.writerow([label, value])
    writer.writerow([])
    writer.writerow(PLACE_COLUMNS)
    for place in report.places:
        writer.writerow(_place_row(place))
    return BOM + buffer.getvalue()


def _summary(report: DailyReport) -> list[tuple[str, object]]:
    return [
        ("Ngày (day)", report.day.isoformat()),
        ("Múi giờ (timezone)", report.timezone),
        ("Lập lúc (built_at, UTC)", report.built_at.isoformat(timespec="seconds")),
        ("Địa điểm đã đăng ký (places_registered)", report.places_registered),
        ("Địa điểm bắt buộc có cổng (places_requiring_gate)", report.places_requiring_gate),
        ("Địa điểm đã có cổng (places_with_gate)", report.places_with_gate),
        ("Địa điểm không tuân thủ (places_non_complying)", report.places_non_complying),
        ("Cổng đã đăng ký (gates_registered)", report.gates_registered),
        ("Cổng hoạt động trong ngày (gates_working)", report.gates_working),
        ("Thiết bị chưa đăng ký có hoạt động (unregistered_devices_heard)", report.unregistered_devices_heard),
        *_scan_lines("", report.scans),
        *_scan_lines("tại điểm chưa đăng ký ", report.scans_unregistered, key="unregistered_"),
        ("Giới hạn mất kết nối, phút (offline_limit_minutes)", round(report.offline_hours_limit * 60)),
    ]


def _scan_lines(where: str, scans: ScanCounts, key: str = "") -> list[tuple[str, object]]:
    return [
        (f"Lượt quét {where}(scans_{key}total)", scans.total),
        (f"Lượt quét {where}được chấp nhận (scans_{key}accepted)", scans.accepted),
        (f"Lượt quét {where}bị từ chối (scans_{key}rejected)", scans.rejected),
        (f"Lượt quét {where}định danh (scans_{key}identified)", scans.identified),
        (f"Lượt quét {where}chiều vào (scans_{key}in)", scans.inbound),
        (f"Lượt quét {where}chiều ra (scans_{key}out)", scans.outbound),
    ]


def _place_row(place: PlaceFigures) -> list[object]:
    scans = place.scans
    return [
        place.place_id, place.name, place.kind, place.district, place.commune,
        "có" if place.gate_required else "không", place.opening_hours, round(place.open_hours * 60),
        place.gates_registered, place.gates_working, scans.total, scans.accepted, scans.rejected,
        scans.identified, scans.inbound, scans.outbound, place.unsynced_checkins,
        "" if place.offline_hours is None else round(place.offline_hours * 60),
        "không" if place.reasons else "có",
        "; ".join(REASON_LABELS["vi"][code] for code in place.reasons),
        " ".join(place.reasons),
        "; ".join(place.detail(code, "vi") for code in place.reasons),
    ]
