"""The dashboard's words in Vietnamese and English: every label of every page, in both.

A page's language is ``?lang=vi|en`` (remembered in a cookie), else the cookie, else ``web.language``. Templates
read labels as ``t.key``; the template environment is strict, so a key missing here fails the page (and its test)
instead of printing an empty cell. Vietnamese is written with its diacritics: an operator reads "Ngoại tuyến", not
"Ngoai tuyen".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from ._labels_operations import OPERATION_LABELS

Language = Literal["vi", "en"]
LANGUAGES: tuple[Language, ...] = ("vi", "en")

# key -> (Vietnamese, English)
LABELS: dict[str, tuple[str, str]] = {
    # frame, navigation
    "app_title": ("qrgate · Bảng điều khiển của tỉnh", "qrgate · Province dashboard"),
    "nav_fleet": ("Thiết bị", "Fleet"),
    "nav_alerts": ("Cảnh báo", "Alerts"),
    "nav_reports": ("Báo cáo", "Reports"),
    "nav_audit": ("Nhật ký kiểm tra", "Audit log"),
    "logged_in_as": ("Đăng nhập:", "Logged in:"),
    "logout": ("Đăng xuất", "Log out"),
    "other_language": ("English", "Tiếng Việt"),
    "role_viewer": ("người xem", "viewer"),
    "role_operator": ("vận hành", "operator"),
    "role_tracer": ("truy vết", "tracer"),
    # log-in
    "login_title": ("Đăng nhập", "Log in"),
    "login_name": ("Tên đăng nhập", "User name"),
    "login_password": ("Mật khẩu", "Password"),
    "login_submit": ("Đăng nhập", "Log in"),
    "login_failed": ("Sai tên đăng nhập hoặc mật khẩu, hoặc tài khoản đang tạm khóa. Vui lòng thử lại sau.",
                     "Wrong name or password, or the account is locked for a while. Please try again later."),
    "login_expired": ("Biểu mẫu đã hết hạn, vui lòng đăng nhập lại.", "The form expired; please log in again."),
    # fleet table
    "fleet_title": ("Thiết bị trong tỉnh", "The province's gates"),
    "col_device": ("Thiết bị", "Device"),
    "col_place": ("Địa điểm", "Place"),
    "col_district": ("Quận/Huyện", "District"),
    "col_gate": ("Cổng", "Gate"),
    "col_direction": ("Chiều", "Direction"),
    "col_state": ("Trạng thái", "State"),
    "col_software": ("Phần mềm", "Software"),
    "col_config": ("Cấu hình", "Config"),
    "col_trust_list": ("Danh sách tin cậy", "Trust list"),
    "col_clock": ("Đồng hồ", "Clock"),
    "col_backlog": ("Tồn đọng", "Backlog"),
    "col_frames": ("Khung hình/giây", "Frames/s"),
    "col_disk": ("Ổ đĩa trống", "Disk free"),
    "col_temperature": ("Nhiệt độ", "Temperature"),
    "col_errors": ("Lỗi", "Errors"),
    "state_online": ("Trực tuyến", "Online"),
    "state_offline": ("Ngoại tuyến", "Offline"),
    "state_unknown": ("Chưa rõ", "Unknown"),
    "state_stale": ("mất tín hiệu", "silent"),
    "last_seen": ("lần cuối", "last seen"),
    "never_seen": ("chưa từng thấy", "never seen"),
    "direction_in": ("Vào", "In"),
    "direction_out": ("Ra", "Out"),
    "direction_both": ("Hai chiều", "Both"),
    "clock_synced": ("Đã đồng bộ", "Synchronised"),
    "clock_unsynced": ("Chưa đồng bộ", "Not synchronised"),
    "not_reported": ("—", "—"),
    "age_now": ("vừa xong", "just now"),
    "age_s": ("{n} giây trước", "{n} s ago"),
    "age_min": ("{n} phút trước", "{n} min ago"),
    "age_h": ("{n} giờ trước", "{n} h ago"),
    "age_d": ("{n} ngày trước", "{n} days ago"),
    "version_age": ("bản {version}, {age}", "v{version}, {age}"),
    "static_anchors": ("khóa tĩnh (không có danh sách ký)", "static anchors (no signed list)"),
    "filter_district": ("Quận/Huyện", "District"),
    "filter_place": ("Địa điểm", "Place"),
    "filter_state": ("Trạng thái", "State"),
    "filter_all": ("Tất cả", "All"),
    "filter_apply": ("Lọc", "Filter"),
    "filter_reset": ("Bỏ lọc", "Clear"),
    "fleet_summary": ("{total} thiết bị: {online} trực tuyến, {offline} ngoại tuyến, {unknown} chưa rõ",
                      "{total} gates: {online} online, {offline} offline, {unknown} unknown"),
    "fleet_truncated": ("Chỉ hiện {shown} trên {total} thiết bị; hãy lọc theo quận/huyện hoặc địa điểm.",
                        "Showing {shown} of {total} gates; filter by district or place."),
    "fleet_empty": ("Không có thiết bị nào phù hợp.", "No gate matches."),
    "live_on": ("Đang cập nhật trực tiếp", "Live"),
    "live_off": ("Mất kết nối, đang thử lại…", "Disconnected, retrying…"),
    "unregistered_place": ("(chưa đăng ký)", "(not registered)"),
    # a place's page
    "place_title": ("Địa điểm", "Place"),
    "place_kind": ("Loại hình", "Type"),
    "kind_office": ("Cơ quan, công sở", "Office"),
    "kind_factory": ("Nhà máy, xí nghiệp", "Factory"),
    "kind_market": ("Chợ", "Market"),
    "kind_supermarket": ("Siêu thị, trung tâm thương mại", "Supermarket, mall"),
    "kind_bus_station": ("Bến xe", "Bus station"),
    "kind_hospital": ("Bệnh viện, cơ sở y tế", "Hospital, clinic"),
    "kind_school": ("Trường học", "School"),
    "kind_restaurant": ("Nhà hàng, quán ăn", "Restaurant"),
    "kind_hotel": ("Khách sạn, nhà nghỉ", "Hotel"),
    "kind_shop": ("Cửa hàng", "Shop"),
    "place_commune": ("Phường/Xã", "Commune/ward"),
    "place_district": ("Quận/Huyện", "District"),
    "place_address": ("Địa chỉ", "Address"),
    "place_gate_required": ("Bắt buộc có cổng quét", "Gate required"),
    "place_opening_hours": ("Giờ mở cửa", "Opening hours"),
    "yes": ("Có", "Yes"),
    "no": ("Không", "No"),
    "place_gates": ("Các cổng", "Gates"),
    "place_no_gates": ("Địa điểm này chưa có cổng quét nào.", "This place has no gate yet."),
    "place_day": ("Ngày", "Day"),
    "place_show_day": ("Xem", "Show"),
    "place_entries": ("Lượt vào", "Entries"),
    "place_exits": ("Lượt ra", "Exits"),
    "place_inside": ("Đang ở bên trong", "Inside now"),
    "place_inside_hint": ("lượt vào chưa có lượt ra, từ đầu ngày", "seen in and not yet out, since the day began"),
    "place_passback": ("Vào lặp (chưa ra)", "Anti-passback flags"),
    "place_passback_hint": ("lần vào thứ hai khi chưa ra: được ghi nhận, không bị chặn",
                            "a second \"in\" without an \"out\": flagged, not refused"),
    "place_hours_title": ("Lượt quét theo giờ", "Scans per hour"),
    "place_chart_label": ("Biểu đồ lượt vào và ra theo giờ", "Chart of entries and exits per hour"),
    "col_hour": ("Giờ", "Hour"),
    "col_entries": ("Vào", "In"),
    "col_exits": ("Ra", "Out"),
    "col_accepted": ("Hợp lệ", "Accepted"),
    "col_rejected": ("Bị từ chối", "Rejected"),
    "col_identified": ("Đã định danh", "Identified"),
    "total": ("Tổng", "Total"),
    "place_no_scans": ("Chưa có lượt quét nào trong ngày.", "No scans this day."),
    "place_today_only": ("chỉ tính cho hôm nay", "today only"),
    "place_not_found": ("Không có địa điểm này trong sổ đăng ký.", "There is no such place in the registry."),
    # alerts
    "alerts_title": ("Cảnh báo đang có", "Open alerts"),
    "alerts_none": ("Không có cảnh báo nào.", "No alerts."),
    "col_alert": ("Cảnh báo", "Alert"),
    "col_since": ("Từ lúc", "Since"),
    "col_detail": ("Chi tiết", "Detail"),
    "alert_offline": ("Ngoại tuyến quá lâu", "Offline too long"),
    "alert_trust_list_old": ("Danh sách tin cậy quá cũ", "Trust list too old"),
    "alert_clock_unsynchronised": ("Đồng hồ chưa đồng bộ", "Clock not synchronised"),
    "alert_backlog_growing": ("Tồn đọng đang tăng", "Backlog growing"),
    "alert_rejections_in_row": ("Nhiều lượt bị từ chối liên tiếp", "Many rejections in a row"),
    "alert_disk_nearly_full": ("Ổ đĩa sắp đầy", "Disk nearly full"),
    # reports
    "reports_title": ("Báo cáo hằng ngày (06:00)", "Daily reports (06:00)"),
    "reports_none": ("Chưa có báo cáo nào.", "No report yet."),
    "report_title": ("Báo cáo ngày {day}", "Report of {day}"),
    "report_download_csv": ("Tải CSV", "Download CSV"),
    "report_download_pdf": ("Tải PDF", "Download PDF"),
    "report_not_found": ("Không có báo cáo cho ngày này.", "There is no report for this day."),
    "col_day": ("Ngày", "Day"),
    "col_places_registered": ("Địa điểm đã đăng ký", "Places registered"),
    "col_places_with_gate": ("Địa điểm có cổng", "Places with a gate"),
    "col_gates_working": ("Cổng hoạt động", "Gates working"),
    "col_places_requiring_gate": ("Địa điểm bắt buộc có cổng", "Places that must have a gate"),
    "col_gates_registered": ("Cổng đã đăng ký", "Gates registered"),
    "report_built_at": ("Lập lúc", "Built at"),
    "report_summary": ("Toàn tỉnh", "The whole province"),
    "report_figure": ("Chỉ tiêu", "Figure"),
    "report_value": ("Số liệu", "Value"),
    "col_scans": ("Lượt quét", "Scans"),
    "col_scans_in": ("Lượt vào", "In"),
    "col_scans_out": ("Lượt ra", "Out"),
    "col_non_complying": ("Địa điểm chưa tuân thủ", "Places not complying"),
    "col_reasons": ("Lý do", "Reasons"),
    "col_commune": ("Phường/Xã", "Commune/ward"),
    "report_by_district": ("Theo quận/huyện", "By district"),
    "report_non_complying": ("Địa điểm chưa tuân thủ", "Places not complying"),
    "report_all_comply": ("Tất cả địa điểm đều tuân thủ.", "Every place complies."),
    # audit log
    "audit_title": ("Nhật ký kiểm tra", "Audit log"),
    "audit_hint": ("Ai đã làm gì, khi nào: đăng nhập, đăng xuất, đăng nhập sai, thay đổi tài khoản, truy vết, lệnh.",
                   "Who did what, when: log-ins, log-outs, failed log-ins, changes to people, traces, commands."),
    "audit_none": ("Nhật ký trống.", "The log is empty."),
    "col_at": ("Thời điểm", "When"),
    "col_actor": ("Người thực hiện", "Who"),
    "col_action": ("Hành động", "What"),
    "col_remote": ("Từ địa chỉ", "From"),
    "audit_filter_actor": ("Người thực hiện", "Who"),
    "action_login": ("Đăng nhập", "Logged in"),
    "action_login.failed": ("Đăng nhập bị từ chối", "Log-in refused"),
    "action_logout": ("Đăng xuất", "Logged out"),
    "action_user.add": ("Thêm người dùng", "Person added"),
    "action_user.passwd": ("Đổi mật khẩu", "Password changed"),
    "action_user.role": ("Đổi vai trò", "Role changed"),
    "action_user.disable": ("Khóa người dùng", "Person disabled"),
    "action_trace": ("Truy vết", "Trace"),
    "action_command": ("Lệnh gửi cổng", "Command to a gate"),
    # errors
    "error_forbidden": ("Vai trò của bạn không được xem trang này.", "Your role may not see this page."),
    "error_not_found": ("Không tìm thấy trang này.", "There is no such page."),
    "error_title": ("Lỗi", "Error"),
    "back_home": ("Về trang thiết bị", "Back to the fleet"),
}
if LABELS.keys() & OPERATION_LABELS.keys():
    raise RuntimeError(f"labels defined twice: {sorted(LABELS.keys() & OPERATION_LABELS.keys())}")
LABELS.update(OPERATION_LABELS)  # the trace and command pages' labels (_labels_operations)


def labels(language: Language) -> Mapping[str, str]:
    """Every label in one language."""
    index = LANGUAGES.index(language)
    return {key: pair[index] for key, pair in LABELS.items()}


LABELS_BY_LANGUAGE: dict[Language, Mapping[str, str]] = {language: labels(language) for language in LANGUAGES}


def language_of(asked: str | None, remembered: str | None, default: str) -> Language:
    """The page's language: asked for in the query, else remembered in the cookie, else the default."""
    for candidate in (asked, remembered, default):
        for language in LANGUAGES:
            if candidate == language:
                return language
    return "vi"
