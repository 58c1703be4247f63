"""A place's opening hours, as the registry's CSV writes them, and the windows of one local day they open.

Written ``06:00-22:00``; several spans ``06:00-11:00,13:00-17:00`` (``;`` also separates, as a cell from a
spreadsheet may); a span past midnight ``18:00-02:00``; ``24/7`` for always open. Times may be written the
Vietnamese way too (``6h-22h``, ``6h30-22h``) and with an en dash, as they are on the shop-front signs the
registry is typed from; ``str()`` gives the canonical form, which ``parse`` reads back to the same value.

The opening of one local day is the part of that day (local midnight to midnight) the place is open: a span past
midnight opens its evening on one day and its small hours on the next. Each hour of opening thus belongs to
exactly one day, the day whose report counts its scans, and "is it open now" needs only today's windows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import unicodedata
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ..errors import ProvinceError

MINUTES_PER_DAY = 24 * 60
_ALWAYS_WORDS = frozenset({"24/7", "24h", "24/24", "always"})
# 06:00, 6:00, 6h, 6h30, 06h00 (a sign in Vietnam writes hours with "h")
_TIME = r"(\d{1,2})(?:[:h](\d{2})?)?"
_SPAN = re.compile(rf"^{_TIME}\s*[-–—]\s*{_TIME}$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """When a place is open every day: spans of local minutes since midnight, ``(start, end)``, sorted by start.

    ``end`` is 1..1440; a span with ``end <= start`` runs past midnight into the next day. Always open is the
    one span ``(0, 1440)``."""

    spans: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, text: str) -> OpeningHours:
        """The hours written in ``text``; ProvinceError names what is wrong with it."""
        cleaned = unicodedata.normalize("NFC", text).strip()
        if not cleaned:
            raise ProvinceError("no opening hours: write e.g. 06:00-22:00, or 24/7")
        if cleaned.lower() in _ALWAYS_WORDS:
            return ALWAYS_OPEN
        spans: list[tuple[int, int]] = []
        for part in re.split(r"\s*[,;]\s*", cleaned):
            match = _SPAN.match(part.strip())
            if match is None:
                raise ProvinceError(f"{part!r} is not a span of hours like 06:00-22:00 (or 24/7)")
            start = _minute(match.group(1), match.group(2), part, end=False)
            end = _minute(match.group(3), match.group(4), part, end=True)
            if start == end:
                raise ProvinceError(f"{part!r} opens and closes at the same time: write 24/7 for always open")
            spans.append((start, end))
        hours = cls(tuple(sorted(spans)))
        segments = sorted(segment for span in hours.spans for segment in _segments(span))
        for (_, first_end), (second_start, _) in itertools.pairwise(segments):
            if second_start < first_end:
                raise ProvinceError(f"{text.strip()!r}: spans overlap")
        return hours

    def __str__(self) -> str:
        if self.spans == ALWAYS_OPEN.spans:
            return "24/7"
        return ",".join(f"{_clock(start)}-{_clock(end)}" for start, end in self.spans)

    @property
    def always(self) -> bool:
        return self.spans == ALWAYS_OPEN.spans

    def local_segments(self) -> list[tuple[int, int]]:
        """Minutes of one local day the place is open, ``[start, end)`` pairs merged and in order."""
        merged: list[tuple[int, int]] = []
        for start, end in sorted(segment for span in self.spans for segment in _segments(span)):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def windows(self, day: dt.date, zone: ZoneInfo) -> list[tuple[dt.datetime, dt.datetime]]:
        """The local day ``day``'s opening as aware UTC ``[start, end)`` intervals, in order."""
        midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
        result = []
        for start, end in self.local_segments():
            # Wall-clock arithmetic on the local midnight, then to UTC: right across a DST change too.
            result.append((_utc(midnight, start), _utc(midnight, end)))
        return result

    def is_open(self, at: dt.datetime, zone: ZoneInfo) -> bool:
        """Whether the place is open at the aware instant ``at``."""
        local = at.astimezone(zone)
        return any(start <= at < end for start, end in self.windows(local.date(), zone))


ALWAYS_OPEN = OpeningHours(((0, MINUTES_PER_DAY),))


def _minute(hours_text: str, minutes_text: str | None, part: str, *, end: bool) -> int:
    hours, minutes = int(hours_text), int(minutes_text or 0)
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise ProvinceError(f"{part!r}: {hours_text}:{minutes_text or '00'} is not a time of day")
    value = hours * 60 + minutes
    return MINUTES_PER_DAY if end and value == 0 else value  # "18:00-00:00" closes at midnight


def _segments(span: tuple[int, int]) -> list[tuple[int, int]]:
    """A span's minutes within one day: itself, or (past midnight) its small hours and its evening."""
    start, end = span
    if start < end:
        return [(start, end)]
    return [segment for segment in ((0, end), (start, MINUTES_PER_DAY)) if segment[0] < segment[1]]


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _utc(midnight: dt.datetime, minute: int) -> dt.datetime:
    if minute == MINUTES_PER_DAY:
        next_day = midnight.date() + dt.timedelta(days=1)
        return dt.datetime.combine(next_day, dt.time(0), tzinfo=midnight.tzinfo).astimezone(dt.UTC)
    return (midnight + dt.timedelta(minutes=minute)).astimezone(dt.UTC)
