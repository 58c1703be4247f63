"""The registry of places and gates (qrgate_provisioning.province.registry): opening hours, the CSV import (all or
nothing, every bad row with its line, BOM, Excel's ';', the gates column), gates assigned and moved, and the
``qrgate-province registry`` commands, against a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.opening_hours import ALWAYS_OPEN, OpeningHours
from qrgate_provisioning.province.registry import Gate, Place, Registry
from qrgate_provisioning.province.settings import DatabaseSettings

EXAMPLE_CSV = Path(__file__).resolve().parent.parent / "firmware" / "province" / "places.example.csv"
HCM = ZoneInfo("Asia/Ho_Chi_Minh")
HEADER = "place_id,name,type,commune,district,address,gate_required,opening_hours,gates\n"


@pytest.fixture
def db(province_dsn: str) -> Iterator[Database]:
    with Database(DatabaseSettings(dsn=province_dsn)) as database:
        database.migrate()
        yield database


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# --- opening hours -----------------------------------------------------------------------------------------


def test_opening_hours_parse_and_round_trip() -> None:
    for text in ("06:00-22:00", "06:00-11:00,13:00-17:00", "18:00-02:00", "24/7", "18:00-24:00"):
        assert str(OpeningHours.parse(text)) == text
        assert OpeningHours.parse(str(OpeningHours.parse(text))) == OpeningHours.parse(text)
    # the ways a sign in Vietnam writes them, and a spreadsheet's ';'
    assert str(OpeningHours.parse("6h-22h")) == "06:00-22:00"
    assert str(OpeningHours.parse(" 13h00 – 17h ; 6:30-11:00 ")) == "06:30-11:00,13:00-17:00"
    assert OpeningHours.parse("00:00-24:00") == ALWAYS_OPEN
    assert OpeningHours.parse("18:00-00:00").spans == ((18 * 60, 24 * 60),)


@pytest.mark.parametrize(("text", "message"), [
    ("", "no opening hours"),
    ("06:00", "not a span"),
    ("25:00-26:00", "not a time of day"),
    ("06:60-07:00", "not a time of day"),
    ("06:00-06:00", "same time"),
    ("06:00-12:00,11:00-14:00", "overlap"),
    ("20:00-03:00,02:00-05:00", "overlap"),
])
def test_opening_hours_refused(text: str, message: str) -> None:
    with pytest.raises(ProvinceError, match=message):
        OpeningHours.parse(text)


def test_opening_hours_windows_of_a_local_day() -> None:
    day = dt.date(2025, 3, 5)
    # Asia/Ho_Chi_Minh is UTC+7: 06:00 local is 23:00 UTC the day before
    assert OpeningHours.parse("06:00-22:00").windows(day, HCM) == [(utc("2025-03-04T23:00"), utc("2025-03-05T15:00"))]
    assert OpeningHours.parse("24/7").windows(day, HCM) == [(utc("2025-03-04T17:00"), utc("2025-03-05T17:00"))]
    assert OpeningHours.parse("06:00-11:00,13:00-17:00").windows(day, HCM) == [
        (utc("2025-03-04T23:00"), utc("2025-03-05T04:00")), (utc("2025-03-05T06:00"), utc("2025-03-05T10:00"))]
    # past midnight: the small hours (from the evening before) and this evening, both inside the local day
    assert OpeningHours.parse("18:00-02:00").windows(day, HCM) == [
        (utc("2025-03-04T17:00"), utc("2025-03-04T19:00")), (utc("2025-03-05T11:00"), utc("2025-03-05T17:00"))]
    # touching spans are one window
    assert OpeningHours.parse("06:00-11:00,11:00-12:00").windows(day, HCM) == [
        (utc("2025-03-04T23:00"), utc("2025-03-05T05:00"))]
    late = OpeningHours.parse("18:00-02:00")
    assert late.is_open(dt.datetime(2025, 3, 6, 1, 30, tzinfo=HCM), HCM)
    assert not late.is_open(dt.datetime(2025, 3, 6, 2, 0, tzinfo=HCM), HCM)
    assert late.is_open(dt.datetime(2025, 3, 5, 18, 0, tzinfo=HCM), HCM)


# --- the CSV import ----------------------------------------------------------------------------------------


def test_import_the_example_then_again_unchanged(db: Database) -> None:
    registry = Registry(db)
    text = EXAMPLE_CSV.read_text(encoding="utf-8")
    rows = text.strip().count("\n")
    first = registry.import_csv(text, "places.example.csv")
    assert (first.created, first.updated, first.unchanged, first.gates_assigned) == (rows, 0, 0, 6)
    again = registry.import_csv(text, "places.example.csv")
    assert (again.created, again.updated, again.unchanged, again.gates_assigned) == (0, 0, rows, 0)

    market = registry.place("CHO-BENTHANH")
    assert market == Place("CHO-BENTHANH", "Chợ Bến Thành", "market", "Phường Bến Thành", "Quận 1", "Đường Lê Lợi",
                           True, OpeningHours.parse("06:00-11:30,13:00-19:00"))
    assert registry.place("QA-PHOHOA") is not None and not registry.place("QA-PHOHOA").gate_required  # type: ignore[union-attr]
    assert registry.place("NOWHERE") is None
    assert registry.gates_of("BX-MIENDONG") == [Gate("GATE-BXMD-01", "BX-MIENDONG", "Cổng A", "in"),
                                                Gate("GATE-BXMD-02", "BX-MIENDONG", "Cổng B", "out")]
    assert registry.gate("GATE-P26-01") == Gate("GATE-P26-01", "UBND-P26", "GATE-P26-01", "both")  # name defaults
    assert registry.districts() == sorted({"Quận Bình Thạnh", "Quận 1", "Quận 5", "Quận 7"})
    assert {p.place_id for p in registry.places(district="Quận Bình Thạnh")} == {"BX-MIENDONG", "UBND-P26",
                                                                                 "QN-DEMKHUYA"}
    assert [p.place_id for p in registry.places(district="Quận 1", commune="Phường Tân Định")] == ["QA-PHOHOA"]
    assert len(registry.gates()) == 6


def test_an_edited_row_is_updated_and_a_gate_moves(db: Database) -> None:
    registry = Registry(db)
    text = EXAMPLE_CSV.read_text(encoding="utf-8")
    registry.import_csv(text)
    rows = text.strip().count("\n")
    edited = text.replace("Quán ăn Phở Hòa,restaurant,Phường Tân Định,Quận 1,260C Pasteur,không,06:00-23:00,",
                          "Quán ăn Phở Hòa,restaurant,Phường Tân Định,Quận 1,260C Pasteur,có,06:00-22:30,"
                          "GATE-CBT-01:in:Cổng mới").replace(",GATE-CBT-01:both:Cổng chính\n", ",\n")
    assert edited.count("GATE-CBT-01") == 1
    result = registry.import_csv(edited)
    assert (result.created, result.updated, result.unchanged, result.gates_assigned) == (0, 1, rows - 1, 1)
    restaurant = registry.place("QA-PHOHOA")
    assert restaurant is not None and restaurant.gate_required and str(restaurant.opening_hours) == "06:00-22:30"
    assert registry.gate("GATE-CBT-01") == Gate("GATE-CBT-01", "QA-PHOHOA", "Cổng mới", "in")
    assert registry.gates_of("CHO-BENTHANH") == []  # moved away; a gate not listed is left alone, not removed
    assert len(registry.gates()) == 6


def test_bad_rows_are_all_reported_with_their_lines_and_nothing_is_imported(db: Database) -> None:
    text = HEADER + (
        "OK-1,Chợ Tân Định,market,Phường Tân Định,Quận 1,48 Hai Bà Trưng,có,06:00-18:00,\n"
        "bad id!,Chợ Lớn,market,Phường 11,Quận 5,,có,06:00-18:00,\n"  # line 3
        "OK-2,,market,Phường 11,Quận 5,,maybe,6-25,\n"  # line 4: three problems
        "\n"  # line 5 blank, skipped
        "OK-3,\"Bệnh viện\nNhi Đồng\",hospital,Phường 10,Quận 10,,yes,24/7,G-1:sideways\n"  # lines 6-7
        "OK-1,Chợ trùng,market,Phường Tân Định,Quận 1,,no,24/7,\n"  # line 8: duplicate id
        "OK-4,Nhà máy,factory,Phường 1,Quận 7,,1,06:00-22:00\n"  # line 9: a field short
        "OK-5,Nhà hàng,restaurant,Phường 1,Quận 7,,0,06:00-22:00,G-9:in;G-9:out\n"  # line 10
    )
    with pytest.raises(ProvinceError) as caught:
        Registry(db).import_csv(text, "places.csv")
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("places.csv: nothing imported")
    problems = lines[1:]
    expected_starts = [
        "places.csv:3: place_id: 'bad id!'",
        "places.csv:4: name: empty",
        "places.csv:4: gate_required: 'maybe'",
        "places.csv:4: opening_hours:",
        "places.csv:6: gates: 'G-1:sideways'",
        "places.csv:8: place_id: OK-1 is already on line 2",
        "places.csv:9: 8 fields, but the header names 9",
        "places.csv:10: gates: G-9 is listed twice",
    ]
    assert len(problems) == len(expected_starts), problems
    for problem, start in zip(problems, expected_starts, strict=True):
        assert problem.startswith(start), (problem, start)
    assert Registry(db).places() == []  # all or nothing: not even the good rows
    assert Registry(db).gates() == []


def test_header_problems(db: Database) -> None:
    with pytest.raises(ProvinceError, match=r"places.csv:1: unknown column 'ward'") as caught:
        Registry(db).import_csv("place_id,name,type,ward,district,address,gate_required\n", "places.csv")
    assert "missing column(s) commune, opening_hours" in str(caught.value)
    with pytest.raises(ProvinceError, match="empty"):
        Registry(db).import_csv("", "places.csv")


def test_excel_csv_with_bom_semicolons_and_decomposed_letters(db: Database) -> None:
    # Excel's "CSV UTF-8" under Vietnamese regional settings: a BOM, ';' between fields; and a name typed on a
    # Mac arrives decomposed (NFD): stored composed, so it groups with the same name typed elsewhere.
    name = unicodedata.normalize("NFD", "Bến xe Miền Tây")
    text = ("\ufeffPLACE_ID;Name;Type;Commune;District;Address;Gate_Required;Opening_Hours;Gates\r\n"
            f"BX-MIENTAY;{name};bus_station;Phường An Lạc;Quận Bình Tân;395 Kinh Dương Vương;Có;"
            "\"04:00-11:00,12:00-21:00\";\"G-MT-1:in;G-MT-2:out\"\r\n")
    assert name != "Bến xe Miền Tây"
    result = Registry(db).import_csv(text)
    assert (result.created, result.gates_assigned) == (1, 2)
    place = Registry(db).place("BX-MIENTAY")
    assert place is not None and place.name == "Bến xe Miền Tây" and place.gate_required
    assert str(place.opening_hours) == "04:00-11:00,12:00-21:00"
    assert [(g.device_id, g.direction) for g in Registry(db).gates_of("BX-MIENTAY")] == [("G-MT-1", "in"),
                                                                                        ("G-MT-2", "out")]


def test_assign_gate_and_upsert_place(db: Database) -> None:
    registry = Registry(db)
    hours = OpeningHours.parse("07:00-17:00")
    registry.upsert_place(Place("UB-1", "UBND Phường 1", "office", "Phường 1", "Quận 3", "", True, hours))
    registry.upsert_place(Place("UB-2", "UBND Phường 2", "office", "Phường 2", "Quận 3", "", True, hours))
    assert registry.assign_gate(Gate("G-U1", "UB-1", "Cổng chính", "both")) is True
    assert registry.assign_gate(Gate("G-U1", "UB-1", "Cổng chính", "both")) is False  # nothing changed
    assert registry.assign_gate(Gate("G-U1", "UB-2", "Cổng chính", "in")) is True  # moved
    assert registry.gates_of("UB-1") == [] and registry.gate("G-U1") == Gate("G-U1", "UB-2", "Cổng chính", "in")
    with pytest.raises(ProvinceError, match="no place 'UB-9'"):
        registry.assign_gate(Gate("G-U2", "UB-9", "x", "in"))
    with pytest.raises(ProvinceError, match="direction 'sideways'"):
        Gate("G-U2", "UB-1", "x", "sideways")  # type: ignore[arg-type]
    with pytest.raises(ProvinceError, match="place id 'a/b'"):
        Place("a/b", "x", "office", "c", "d", "", True, hours)
    registry.upsert_place(Place("UB-1", "UBND Phường Một", "office", "Phường 1", "Quận 3", "", False, hours))
    assert registry.place("UB-1") == Place("UB-1", "UBND Phường Một", "office", "Phường 1", "Quận 3", "", False, hours)


# --- the commands ------------------------------------------------------------------------------------------


def province_main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``qrgate-province ARGV`` through cli.main; while the other helpers' command modules (serve, fleet...) do
    not exist yet, with only this room's commands registered."""
    from qrgate_provisioning.province import cli

    try:
        cli.build_parser()
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("qrgate_provisioning.province.commands."):
            raise
        monkeypatch.setattr(cli, "SUBCOMMANDS", {"registry": "registry", "report": "report"})
    return cli.main(argv)


def test_registry_commands(province_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           tmp_path: Path) -> None:
    dsn = ["--dsn", province_dsn]
    assert province_main(["registry", "import", str(EXAMPLE_CSV), *dsn], monkeypatch) == 0
    assert "7 place(s) created, 0 updated, 0 unchanged; 6 gate(s) assigned" in capsys.readouterr().out

    assert province_main(["registry", "assign", "GATE-NEW", "--place", "NM-TANTHUAN", "--gate", "Cổng 1",
                          "--direction", "in", *dsn], monkeypatch) == 0
    assert "GATE-NEW: now gate 'Cổng 1' (in) of NM-TANTHUAN" in capsys.readouterr().out

    assert province_main(["registry", "list", "--district", "Quận 7", "--json", *dsn], monkeypatch) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed == [{"place_id": "NM-TANTHUAN", "name": "Nhà máy may Tân Thuận", "kind": "factory",
                       "commune": "Phường Tân Thuận Đông", "district": "Quận 7",
                       "address": "Lô 12 Khu chế xuất Tân Thuận", "gate_required": True,
                       "opening_hours": "06:00-22:00", "gates": ["GATE-NEW:in:Cổng 1"]}]

    assert province_main(["registry", "list", *dsn], monkeypatch) == 0
    table = capsys.readouterr().out
    assert "Bệnh viện Chợ Rẫy" in table and "GATE-BVCR-01:in:Cổng Nguyễn Chí Thanh" in table
    assert table.rstrip().endswith("7 place(s)")

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "X-1,Chợ,market,P1,Q1,,có,06:00-99:00,\n", encoding="utf-8")
    assert province_main(["registry", "import", str(bad), *dsn], monkeypatch) == 1
    assert f"{bad}:2: opening_hours:" in capsys.readouterr().err
    ansi = tmp_path / "ansi.csv"  # saved as plain "CSV" by an old Excel: the Windows code page, not UTF-8
    ansi.write_bytes((HEADER + "X-1,Café Sài Gòn,restaurant,P1,Q1,,no,24/7,\n").encode("latin-1"))
    assert province_main(["registry", "import", str(ansi), *dsn], monkeypatch) == 1
    assert "not UTF-8" in capsys.readouterr().err
    assert province_main(["registry", "assign", "G-X", "--place", "NOWHERE", "--gate", "x", "--direction", "in",
                          *dsn], monkeypatch) == 1
    assert "no place 'NOWHERE'" in capsys.readouterr().err
