"""Validity durations written as "24h", "90d", "12m" (30-day months) or "1y" (365 days)."""

import math
import re
from datetime import timedelta

from pki.errors import InvalidDuration

_FORM = re.compile(r"^([1-9][0-9]{0,5})([hdmy])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "m": timedelta(days=30), "y": timedelta(days=365)}
_ACCEPTED = "a positive whole number followed by h (hours), d (days), m (30-day months) or y (365-day years)"


def parse_duration(text: str) -> timedelta:
    match = _FORM.match(text.strip().lower()) if isinstance(text, str) else None
    if match is None:
        raise InvalidDuration(f"invalid duration '{text}': use {_ACCEPTED}, e.g. 24h, 90d, 12m, 1y")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_duration(td: timedelta) -> str:
    """Shortest exact form in years, days or hours (partial hours round up)."""
    if td <= timedelta(0):
        raise InvalidDuration(f"duration {td} is not positive")
    year, day = _UNITS["y"], _UNITS["d"]
    if td % year == timedelta(0):
        return f"{td // year}y"
    if td % day == timedelta(0):
        return f"{td // day}d"
    return f"{math.ceil(td / timedelta(hours=1))}h"
