"""The labels of the trace page (tracer role) and of the command pages (operator role), in Vietnamese and English.

Package-private: ``i18n.LABELS`` takes them in, and pages read them from there like every other label. They live
apart so that ``i18n`` stays readable; a key here that ``i18n`` already has is refused when it is imported.
"""

from __future__ import annotations

from typing import get_args

from qrgate.wire import CommandOutcome

# key -> (Vietnamese, English)
OPERATION_LABELS: dict[str, tuple[str, str]] = {
    # navigation
    "nav_trace": ("Truy vết", "Trace"),
    "nav_commands": ("Lệnh", "Commands"),
    "action_command_answer": ("Trả lời của cổng", "Gate's answer"),
    # the trace page
    "trace_title": ("Truy vết một trường hợp", "Trace a case"),
    "trace_hint": ("Mọi lượt có mặt của một thẻ hoặc một người trong khoảng thời gian đã chọn, và những người khác "
                   "có mặt tại cùng địa điểm trong vòng ±N phút. Mỗi lần truy vết và mỗi lần tải về đều được ghi vào "
                   "nhật ký kiểm tra.",
                   "Every visit of one pass or one person in the chosen span, and the other people at the same place "
                   "within ±N minutes. Every trace and every download is written to the audit log."),
    "trace_presence_note": ("Chỉ lượt quét hợp lệ hoặc đã định danh mới được tính là có mặt.",
                            "Only accepted or identified check-ins count as presence."),
    "trace_pass_id": ("Mã thẻ", "Pass id"),
    "trace_subject_id": ("Mã người (ẩn danh)", "Subject id (pseudonymous)"),
    "trace_either": ("Nhập một trong hai mã, không nhập cả hai.", "Give one of the two ids, not both."),
    "trace_from": ("Từ", "From"),
    "trace_to": ("Đến (không tính thời điểm này)", "To (excluded)"),
    "trace_zone": ("Giờ địa phương: {zone}", "Local time: {zone}"),
    "trace_window": ("Khoảng cách (phút)", "Window (minutes)"),
    "trace_submit": ("Truy vết", "Trace"),
    "trace_download_csv": ("Tải CSV", "Download CSV"),
    "trace_download_json": ("Tải JSON", "Download JSON"),
    "trace_result_title": ("Kết quả truy vết", "Trace result"),
    "trace_summary": ("{visits} lượt có mặt; {contacts} lượt quét của {people} người khác có mặt cùng lúc.",
                      "{visits} visit(s); {contacts} check-in(s) of {people} other person(s) present at the same "
                      "time."),
    "trace_visits": ("Các lượt có mặt", "Visits"),
    "trace_no_visits": ("Không có lượt có mặt nào trong khoảng thời gian này.", "No visit in this span."),
    "trace_contacts": ("Những người có mặt cùng lúc", "People present at the same time"),
    "trace_no_contacts": ("Không có ai khác có mặt cùng lúc.", "Nobody else was present at the same time."),
    "col_time": ("Thời điểm", "Time"),
    "col_person": ("Mã người (ẩn danh)", "Person (pseudonymous id)"),
    "col_minutes_apart": ("Cách nhau (phút)", "Minutes apart"),
    "col_visit_time": ("Lượt có mặt lúc", "Visit at"),
    "trace_error_no_id": ("Hãy nhập mã thẻ hoặc mã người cần truy vết.",
                          "Give the pass id or the subject id to trace."),
    "trace_error_both_ids": ("Chỉ nhập một mã: mã thẻ hoặc mã người, không nhập cả hai.",
                             "Give one id only: the pass id or the subject id, not both."),
    "trace_error_id": ("Mã không hợp lệ: tối đa {max} ký tự, không có ký tự điều khiển.",
                       "That id is not valid: at most {max} characters, no control characters."),
    "trace_error_time": ("Hãy nhập thời điểm bắt đầu và kết thúc (ngày và giờ).",
                         "Give the start and the end as a date and a time."),
    "trace_error_order": ("Thời điểm kết thúc phải sau thời điểm bắt đầu.", "The end must come after the start."),
    "trace_error_span": ("Một lần truy vết chỉ bao gồm tối đa {days} ngày.", "A trace covers at most {days} days."),
    "trace_error_window": ("Khoảng cách phải là một số nguyên từ 0 đến {max} phút.",
                           "The window is a whole number of minutes from 0 to {max}."),
    "trace_failed": ("Không thực hiện được truy vết: {detail}", "The trace could not run: {detail}"),
    # the command pages
    "commands_title": ("Gửi lệnh tới cổng", "Send a command to a gate"),
    "commands_pick_hint": ("Nhập mã thiết bị, hoặc dùng liên kết «Lệnh» ở hàng của cổng trong bảng thiết bị.",
                           "Type the device id, or use the «Command» link on the gate's row in the fleet table."),
    "commands_device": ("Mã thiết bị", "Device id"),
    "commands_open": ("Mở", "Open"),
    "command_link": ("Lệnh", "Command"),
    "command_title": ("Lệnh cho cổng {device}", "Command to gate {device}"),
    "command_name": ("Lệnh", "Command"),
    "cmd_status": ("Báo trạng thái", "Report its status"),
    "cmd_self_test": ("Tự kiểm tra", "Self-test"),
    "cmd_reload_trust": ("Nạp lại danh sách tin cậy", "Reload the trust lists"),
    "cmd_flush_outbox": ("Gửi ngay các lượt quét đang chờ", "Flush the outbox now"),
    "cmd_set_log_level": ("Đặt mức ghi nhật ký", "Set the log level"),
    "cmd_restart": ("Khởi động lại", "Restart"),
    "command_level": ("Mức ghi nhật ký (chỉ dùng cho «Đặt mức ghi nhật ký»)",
                      "Log level (for «Set the log level» only)"),
    "command_confirm_restart": ("Tôi xác nhận khởi động lại cổng này (cổng ngừng quét trong lúc khởi động lại).",
                                "I confirm restarting this gate (it stops scanning while it restarts)."),
    "command_send": ("Ký và gửi", "Sign and send"),
    "command_hint": ("Lệnh được ký bằng khóa vận hành {kid} của dịch vụ và có hiệu lực {lifetime} giây; cổng từ chối "
                     "mọi lệnh không có chữ ký hợp lệ. Lệnh và câu trả lời được ghi vào nhật ký kiểm tra.",
                     "The command is signed with the service's operator key {kid} and valid for {lifetime} s; a gate "
                     "refuses any command without a valid signature. The command and its answer are written to the "
                     "audit log."),
    "command_not_configured": ("Chưa cấu hình gửi lệnh: hãy đặt key_file trong mục [commands] của province.toml "
                               "(khóa tạo bằng qrgate-province command-key new).",
                               "Commands are not configured: set key_file in the [commands] section of province.toml "
                               "(a key made with qrgate-province command-key new)."),
    "command_key_unusable": ("Không dùng được khóa vận hành: {detail}", "The operator key cannot be used: {detail}"),
    "command_unknown_gate": ("Không có cổng này trong sổ đăng ký hay trong các thiết bị đã kết nối.",
                             "There is no such gate in the registry or among the gates heard from."),
    "command_error_name": ("Hãy chọn một lệnh trong danh sách.", "Choose a command from the list."),
    "command_error_level": ("Hãy chọn một mức ghi nhật ký.", "Choose a log level."),
    "command_error_confirm": ("Hãy đánh dấu ô xác nhận để khởi động lại cổng.",
                              "Tick the confirmation box to restart the gate."),
    "command_busy": ("Một lệnh khác đang được gửi; vui lòng thử lại sau giây lát.",
                     "Another command is being sent; please try again in a moment."),
    "command_audit_failed": ("Không ghi được nhật ký kiểm tra ({detail}). Lệnh chỉ được gửi sau khi đã ghi nhật ký; "
                             "hãy xem nhật ký kiểm tra.",
                             "The audit log could not be written ({detail}). A command is sent only once its audit "
                             "line is written; look at the audit log."),
    "command_no_answer": ("Lệnh không nhận được trả lời từ cổng.", "The command got no answer from the gate."),
    "command_answer_title": ("Trả lời của cổng", "The gate's answer"),
    "command_answered_at": ("Trả lời lúc", "Answered at"),
    "col_outcome": ("Kết quả", "Outcome"),
    "col_result": ("Dữ liệu trả về", "Result"),
    "outcome_done": ("Đã thực hiện", "Done"),
    "outcome_malformed": ("Lệnh không đọc được", "Unreadable command"),
    "outcome_unknown_key": ("Cổng không biết khóa ký này", "Signing key unknown to the gate"),
    "outcome_bad_signature": ("Chữ ký không hợp lệ", "Bad signature"),
    "outcome_expired": ("Lệnh đã hết hạn", "Command expired"),
    "outcome_not_yet_valid": ("Lệnh chưa có hiệu lực (đồng hồ lệch?)", "Not yet valid (a clock is off?)"),
    "outcome_lifetime_too_long": ("Thời hạn của lệnh quá dài", "Lifetime too long"),
    "outcome_replayed": ("Lệnh bị gửi lại", "Replayed"),
    "outcome_wrong_device": ("Lệnh dành cho thiết bị khác", "For another device"),
    "outcome_bad_argument": ("Tham số không hợp lệ", "Bad argument"),
    "outcome_failed": ("Thực hiện không thành công", "Failed"),
}

# every answer a gate can give has its words (a new outcome in wire must be named here too)
_MISSING = {f"outcome_{outcome}" for outcome in get_args(CommandOutcome)} - OPERATION_LABELS.keys()
if _MISSING:
    raise RuntimeError(f"labels missing for command outcomes: {sorted(_MISSING)}")
