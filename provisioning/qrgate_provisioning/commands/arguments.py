"""Argument types the subcommands share: each parses one option's text or tells argparse why not.

A type that raises ``argparse.ArgumentTypeError`` makes argparse print the reason with the option's
name and exit 2 (usage), before anything is read or written.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

# Issuer ids name the key files (``keys.write_issuer_files``), so they keep to file-name-safe characters.
ISSUER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
COUNTRY = re.compile(r"[A-Z]{2}")


def issuer_id(value: str) -> str:
    if not ISSUER_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "an issuer id is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. VN-HN)"
        )
    return value


def country(value: str) -> str:
    if not COUNTRY.fullmatch(value):
        raise argparse.ArgumentTypeError("a country is two capital letters (ISO 3166-1 alpha-2), e.g. VN")
    return value


def days(maximum: int) -> Callable[[str], int]:
    """A whole number of days from 1 to ``maximum``."""

    def parse(value: str) -> int:
        try:
            count = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
        if not 0 < count <= maximum:
            raise argparse.ArgumentTypeError(f"days must be 1 to {maximum}")
        return count

    return parse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value
