"""ACME's timestamps (RFC 8555 §7.1, RFC 9773 §4.2): RFC 3339 in UTC, to the second."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
