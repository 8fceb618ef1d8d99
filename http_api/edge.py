"""Checks every HTTP channel applies to untrusted input before the domain or the database
sees it: text that UTF-8 and PostgreSQL can hold, integers a BIGINT can hold, and secrets
compared as bytes whatever bytes a client put in a header.

aiohttp decodes header bytes that are not UTF-8 as lone surrogates (``surrogateescape``)
and a JSON text may spell one (``"\\ud800"``); PostgreSQL refuses NUL in text and jsonb.
Each channel answers what fails here with its own documented refusal (docs/OPERATIONS.md
"Security"), never with a 5xx.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1

# What aiohttp raises for a body that is not the form its Content-Type names: a multipart type with
# no boundary or a broken body (ValueError, BadHttpMessage), bytes not in the charset (UnicodeDecodeError),
# an unknown charset (LookupError) or part encoding (RuntimeError, TypeError).
FORM_ERRORS = (ValueError, LookupError, RuntimeError, TypeError, BadHttpMessage)

# C0 controls but tab, LF and CR; DEL and the C1 controls; every surrogate code point.
_NOT_STORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def storable(text: str) -> bool:
    """False when ``text`` holds NUL or another control character (tab, LF and CR pass), or a
    lone surrogate (bytes that were not UTF-8)."""
    return _NOT_STORABLE.search(text) is None


def in_bigint(value: int) -> bool:
    return BIGINT_MIN <= value <= BIGINT_MAX


def secret_matches(given: str | None, secret: str | None) -> bool:
    """Constant-time comparison of UTF-8 bytes; an unset (or empty) secret authorises nobody.

    A header holding bytes that are not UTF-8 arrives as surrogates: they are encoded as
    such (``surrogatepass``), so they compare unequal instead of raising.
    """
    if not secret or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), secret.encode("utf-8"))


async def read_form(request: web.Request) -> Mapping[str, str] | None:
    """A form body's text fields (first value wins), or None when the body cannot be read as the
    form its Content-Type names (``FORM_ERRORS``); too large a body still answers 413."""
    try:
        form = await request.post()
    except FORM_ERRORS:
        return None
    found: dict[str, str] = {}
    for name, value in form.items():
        if isinstance(value, str) and name not in found:
            found[name] = value
    return found
