"""CertLogic's date-times: parsing the allowed formats, ``dccDateOfBirth``, and ``plusTime``'s offsetting.

The specification defines offsetting by JavaScript's ``Date`` (``setUTCFullYear``, ``setUTCMonth``,
``setUTCDate``, ``setUTCHours``), so a date-time here is what a ``Date`` is: integer milliseconds since
the epoch, UTC, and the calendar arithmetic is ECMAScript's MakeDay, in which a day past the end of its
month rolls over into the next one (2020-02-29 plus one year is 2021-03-01). Python's ``datetime`` is not
used: its ``replace(year=...)`` refuses that case instead of rolling over, and it stops at year 9999.

Strings are read only in the formats the specification lists, with ASCII digits (``re.ASCII``: ``\\d``
would take other scripts' digits), and every field is checked: the specification leaves an impossible
date such as ``2021-09-99`` undefined, so it is an error here rather than some date. Results beyond
ECMAScript's range (100,000,000 days either side of 1970) are errors too, where ``Date`` would be invalid.
Every failure is a ValueError with a short message; the evaluator turns it into a CertLogicError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000
MAX_EPOCH_MS = 8_640_000_000_000_000  # ECMAScript's TimeClip bound: |t| beyond it is an invalid Date
TIME_UNITS = ("year", "month", "day", "hour")

_DOB = re.compile(r"([0-9]{4})(?:-([0-9]{2})(?:-([0-9]{2}))?)?", re.ASCII)
# YYYY-MM-DDThh:mm:ss[.S...][Z | [+-]h[h][[:]mm]]: the 16 date-time formats of the specification.
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:(Z)|([+-])([0-9]{1,2})(?::?([0-9]{2}))?)?", re.ASCII)


@dataclass(frozen=True, slots=True, order=True, repr=False)
class DateTime:
    """A CertLogic date-time: milliseconds since 1970-01-01T00:00:00Z, as JavaScript's ``Date`` holds it.

    Only ``plusTime`` and ``dccDateOfBirth`` make one; ``after``/``before``/``not-after``/``not-before``
    compare them. The offset a string was written with is not kept, as ``Date`` does not keep it.
    """

    epoch_ms: int

    def isoformat(self) -> str:
        """``YYYY-MM-DDThh:mm:ss.sssZ``, as ``Date.prototype.toISOString`` writes it (``±YYYYYY`` outside 0-9999)."""
        day, ms = divmod(self.epoch_ms, MS_PER_DAY)
        year, month, date = civil_from_days(day)
        seconds, millis = divmod(ms, 1000)
        text_year = f"{year:04d}" if 0 <= year <= 9999 else f"{'+' if year > 0 else '-'}{abs(year):06d}"
        return (f"{text_year}-{month:02d}-{date:02d}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:"
                f"{seconds % 60:02d}.{millis:03d}Z")

    def __str__(self) -> str:
        return self.isoformat()

    def __repr__(self) -> str:
        return f"DateTime({self.isoformat()!r})"


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (month 1-12; any day, counted on from day 1)."""
    # Howard Hinnant's days_from_civil, exact for every integer year.
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468 + day - 1


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The proleptic Gregorian (year, month 1-12, day 1-31) of a count of days since 1970-01-01."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def days_in_month(year: int, month: int) -> int:
    return days_from_civil(year + month // 12, month % 12 + 1, 1) - days_from_civil(year, month, 1)


def _make_day(year: int, month_index: int, date: int) -> int:
    """ECMAScript's MakeDay: a 0-based month beyond 0-11 moves the year, a date beyond the month moves on."""
    return days_from_civil(year + month_index // 12, month_index % 12 + 1, 1) + date - 1


def _checked(epoch_ms: int) -> DateTime:
    if abs(epoch_ms) > MAX_EPOCH_MS:
        raise ValueError("date-time out of range (beyond 100,000,000 days from 1970)")
    return DateTime(epoch_ms)


def _date(year: int, month: int, day: int, text: str) -> int:
    if not 1 <= month <= 12 or not 1 <= day <= days_in_month(year, month):
        raise ValueError(f"not a valid date: {_show(text)}")
    return days_from_civil(year, month, day)


def dcc_date_of_birth(text: str) -> DateTime:
    """``dccDateOfBirth``: ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` as the last day it can mean, at 00:00Z.

    ``2004`` is 2004-12-31, ``2004-02`` is 2004-02-29; a date-time string is none of the three formats
    the specification gives for a DCC's ``dob``, so it is an error, as in the reference implementation.
    """
    match = _DOB.fullmatch(text)
    if match is None:
        raise ValueError(f"not a DCC date of birth (YYYY, YYYY-MM or YYYY-MM-DD): {_show(text)}")
    year_text, month_text, day_text = match.groups()
    year = int(year_text)
    month = 12 if month_text is None else int(month_text)
    if not 1 <= month <= 12:
        raise ValueError(f"not a valid date: {_show(text)}")
    day = days_in_month(year, month) if day_text is None else int(day_text)
    return DateTime(_date(year, month, day, text) * MS_PER_DAY)


def parse_date_time(text: str) -> DateTime:
    """A date or date-time string in one of the specification's 19 formats, as ``plusTime`` reads it.

    Partial dates are read as ``dccDateOfBirth`` reads them (specification 1.3.2); a date without a time
    is at 00:00:00.000; a missing offset is ``Z``; decimals beyond milliseconds are dropped (rounding down).
    So a DCC's ``"dt": "2021-06-01T10:00:00"`` is 10:00 UTC on that day, not midnight.
    """
    if _DOB.fullmatch(text):
        return dcc_date_of_birth(text)
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"not an allowed date or date-time format: {_show(text)}")
    year, month, day, hour, minute, second = (int(field) for field in match.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"not a valid time of day: {_show(text)}")
    offset = 0
    if sign is not None and zulu is None:
        hours, minutes = int(offset_hours), int(offset_minutes or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"not a valid offset: {_show(text)}")
        offset = (hours * 60 + minutes) * (-1 if sign == "-" else 1)
    millis = int((fraction or "").ljust(3, "0")[:3])
    seconds = ((_date(year, month, day, text) * 24 + hour) * 60 + minute - offset) * 60 + second
    return DateTime(seconds * 1000 + millis)


def plus_time(moment: DateTime, amount: int, unit: str) -> DateTime:
    """``moment`` offset by ``amount`` of ``unit`` in UTC, as ``Date.setUTC<unit>(getUTC<unit>() + amount)``."""
    if unit == "hour":
        return _checked(moment.epoch_ms + amount * MS_PER_HOUR)
    day, ms = divmod(moment.epoch_ms, MS_PER_DAY)
    if unit == "day":
        return _checked((day + amount) * MS_PER_DAY + ms)
    if unit not in ("month", "year"):
        raise ValueError(f"unknown time unit: {_show(unit)}")
    if abs(amount) > 100_000_000:  # months or years: out of range from any start, refused before the arithmetic
        raise ValueError("date-time out of range (beyond 100,000,000 days from 1970)")
    year, month, date = civil_from_days(day)
    day = _make_day(year, month - 1 + amount, date) if unit == "month" else _make_day(year + amount, month - 1, date)
    return _checked(day * MS_PER_DAY + ms)


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")
