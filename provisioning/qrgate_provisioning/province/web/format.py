"""How the dashboard writes numbers, sizes, times and ages, in the page's language.

Times are shown in the province's time zone (``report.timezone``): an operator in Hà Nội reads 14:05, not 07:05Z.
Vietnamese groups thousands with a dot (18.365) and writes decimals with a comma (3,5); English the other way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from .i18n import Language


def number(value: float, language: Language, decimals: int = 0) -> str:
    text = f"{value:,.{decimals}f}"
    if language == "vi":
        text = text.replace(",", " ").replace(".", ",").replace(" ", ".")
    return text


def size(value_bytes: float, language: Language) -> str:
    """A size in the largest unit that keeps it at least 1 (powers of 1024, as ``df -h``)."""
    value = float(value_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{number(value, language, 0 if unit == 'B' else 1)} {unit}"
        value /= 1024
    return f"{number(value, language, 1)} TiB"


def age(seconds: float, t: Mapping[str, str]) -> str:
    """How long ago, in words: "5 phút trước" / "5 min ago"."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return t["age_now"]
    if seconds < 120:
        return t["age_s"].format(n=int(seconds))
    if seconds < 2 * 3600:
        return t["age_min"].format(n=int(seconds // 60))
    if seconds < 2 * 86400:
        return t["age_h"].format(n=int(seconds // 3600))
    return t["age_d"].format(n=int(seconds // 86400))


def local_time(epoch: float, zone: ZoneInfo, now: float) -> str:
    """The clock time if it was today, else the date too (dd/mm/yyyy, as Vietnam writes dates)."""
    moment = dt.datetime.fromtimestamp(epoch, zone)
    today = dt.datetime.fromtimestamp(now, zone).date()
    if moment.date() == today:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%d/%m/%Y %H:%M")


def local_datetime(moment: dt.datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%d/%m/%Y %H:%M:%S")
