"""Passwords out of URLs: what every message, log line and listing shows of a URL."""

from __future__ import annotations

import re

# userinfo up to the last "@" of the authority; the fallback covers an unencoded "/" in a password
_URL_CREDENTIALS = (
    re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/?#]*):[^/?#]*@"),
    re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/?#]*):.*@"),
)
URL_PASSWORD_IN_TEXT = re.compile(r"(://[^:@/\s'\"]*):[^@\s'\"]*@")


def mask_url(url: str | None) -> str | None:
    """The URL with its password replaced by ***; other strings are returned unchanged."""
    if not url:
        return url
    for pattern in _URL_CREDENTIALS:
        match = pattern.match(url)
        if match:
            return f"{match['head']}:***@{url[match.end():]}"
    return url
