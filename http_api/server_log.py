"""The logger aiohttp's HTTP server writes to, and its error answers, made safe for a request an attacker shaped.

aiohttp logs a malformed request (an over-long request line or header, a bad character, a
bad method) at ERROR with the parser's exception, whose message quotes the start of the
offending bytes: a query string with a license key or the SMS secret, a header's secret
value. ``ClientErrorFilter`` turns each such record into one line that names only the
client's address and the kind of error, counts it in
``recharge_http_protocol_errors_total{reason}``, and logs at most one per
``interval_s`` (a flood of garbage would otherwise flood the log), saying how many it
left out. Other records (a real server error) pass on to the redacting formatter
(``app.logs``). The answer to such a request (HTTP 400, 413, 431…) quoted the same bytes back:
``safe_answers`` makes it the bare status line's phrase (found by the HTTP fuzzing of issue 18:
a LICENSEKEY in an over-long request line came back in the body).
"""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from recharge import metrics

LOGGER_NAME = "http_api.server"


class ClientErrorFilter(logging.Filter):
    """Rewrites the server's records of a malformed request (see the module docstring)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last = float("-inf")
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        reason = type(error).__name__
        metrics.HTTP_PROTOCOL_ERRORS.labels(reason).inc()
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._left_out += 1
            return False
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "malformed HTTP request from %s: %s (HTTP %s)%s"
        record.args = (remote, reason, error.code,
                       f"; {self._left_out} more left out of the log" if self._left_out else "")
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        self._last, self._left_out = now, 0
        return True


def server_logger() -> logging.Logger:
    """The logger to hand aiohttp's server (``AppRunner(logger=…)``), with the filter once."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())
    return logger


class _SafeAnswers(RequestHandler):
    """aiohttp's handler whose answer to a malformed request never quotes the request."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> StreamResponse:
        if message is not None and status < 500:
            message = f"{status} {HTTPStatus(status).phrase}\n"
        return super().handle_error(request, status, exc, message)


def safe_answers(handler: asyncio.Protocol) -> asyncio.Protocol:
    """The same connection handler, answering a malformed request with its status phrase only."""
    if type(handler) is RequestHandler:
        handler.__class__ = _SafeAnswers
    return handler
