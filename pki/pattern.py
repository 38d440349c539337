"""Glob patterns of policies: `*` stays within one DNS label, `**` spans labels."""

import functools
import ipaddress
import re

from pki.errors import InvalidPolicy


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str, stops: str) -> re.Pattern[str]:
    if not pattern:
        raise InvalidPolicy("empty pattern")
    if "***" in pattern:
        raise InvalidPolicy(f"pattern '{pattern}': use * or **, not ***")
    boundaries = stops + "@"
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        width = 2 if pattern.startswith("**", index) else 1 if pattern[index] == "*" else 0
        if width == 0:
            parts.append(re.escape(pattern[index]))
            index += 1
            continue
        # A wildcard that is a whole label (or segment) never matches an empty one.
        before = pattern[index - 1] if index > 0 else ""
        after = pattern[index + width] if index + width < len(pattern) else ""
        whole = (before == "" or before in boundaries) and (after == "" or after in boundaries)
        quantifier = "+" if whole else "*"
        parts.append(f".{quantifier}" if width == 2 else f"[^{re.escape(stops)}]{quantifier}")
        index += width
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def validate_pattern(pattern: str) -> None:
    """Raise InvalidPolicy for a pattern that cannot be used."""
    if not isinstance(pattern, str):
        raise InvalidPolicy(f"pattern must be a string, got {type(pattern).__name__}")
    _compile(pattern, ".")


def match_pattern(pattern: str, value: str) -> bool:
    """Case-insensitive; `*` matches a run of characters other than ".", `**` any run."""
    return _compile(pattern, ".").fullmatch(value) is not None


def match_uri_pattern(pattern: str, value: str) -> bool:
    """Like match_pattern, but `*` also stops at "/" so it cannot cross path segments."""
    return _compile(pattern, "./").fullmatch(value) is not None


def validate_ip_pattern(pattern: str) -> None:
    try:
        ipaddress.ip_network(pattern.strip(), strict=False)
    except (ValueError, AttributeError) as exc:
        raise InvalidPolicy(f"'{pattern}' is not an IP address or CIDR network") from exc


def match_ip(pattern: str, value: str) -> bool:
    """Pattern is an IP address or CIDR network; an IPv4 pattern never matches an IPv6 value."""
    validate_ip_pattern(pattern)
    network = ipaddress.ip_network(pattern.strip(), strict=False)
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    return address.version == network.version and address in network
