"""The inbound-SMS hook (SPEC 3.3): ``GET``/``POST /sms/inbound`` for an SMS gateway.

Kannel's conventions: ``get-url`` sends ``from``, ``to`` and ``text`` as query parameters
(``…/sms/inbound?secret=S&from=%p&to=%P&text=%a&id=%I``); ``post-url`` POSTs the message as
the body (``text/plain``, its charset) with the numbers in the URL or in the
``X-Kannel-From`` / ``X-Kannel-To`` headers; a form body (``from``, ``to``, ``text``) works
too. The ``text/plain; charset=utf-8`` body we answer is the reply SMS.

Messages whose ``to`` is the mobile payment service number (``mpay_sms_service_number``,
10658888, alone or followed by up to 6 digits) go to the mobile payment account's dialogue
(SPEC 6.5, ``recharge.mpay.sms_channel``); any other ``to``, or none, to KaKaTong (3.3).

The gateway proves itself with the shared secret ``sms_shared_secret``, sent as the
``X-SMS-Secret`` header or the ``secret`` parameter (query or form), compared in constant
time; missing or wrong → 403, and an unset secret disables the hook (403). With
``sms_allowed_networks`` set, a client outside them (its real address, behind
``trusted_proxies``) → 403 too. A malformed
gateway request (no or bad ``from``, bad ``id``, undecodable body, a form body that is not its
Content-Type's form) → 400; an ``id`` given empty is a bad id. Everything a
sender can type is answered 200 with a text — business refusals, and also a busy or broken
database (a gateway turns a 5xx into "could not fetch content" for the user).
"""

from __future__ import annotations

import functools
import logging
import re

from aiohttp import web

from http_api import edge
from http_api.context import kkt_config, platform_of
from http_api.mpay_env import env_of
from recharge import metrics
from recharge.context import Busy
from recharge.kkt import sms, sms_channel
from recharge.mpay import codes as mpay_codes
from recharge.mpay import sms_channel as mpay_sms
from recharge.network import Network, is_trusted, parse_networks

log = logging.getLogger(__name__)

PATH = "/sms/inbound"
SECRET_HEADER = "X-SMS-Secret"
SECRET_PARAM = "secret"
KANNEL_FROM_HEADER = "X-Kannel-From"
KANNEL_TO_HEADER = "X-Kannel-To"
_MSISDN_RE = re.compile(r"\+?([0-9]{3,20})")
_MESSAGE_ID_RE = re.compile(r"[0-9A-Za-z_.:-]{1,64}")  # what the card service accepts as REQID
_CHINA_PREFIXES = ("0086", "86")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class _BadRequest(Exception):
    """The gateway (not the sender) sent something malformed: 400."""


def normalise_msisdn(raw: str | None) -> str | None:
    """``+8613811111111`` / ``008613811111111`` / ``13811111111`` → ``13811111111``;
    other numbers as their digits; None when not a phone number."""
    found = _MSISDN_RE.fullmatch((raw or "").strip())
    if found is None:
        return None
    digits = found.group(1)
    for prefix in _CHINA_PREFIXES:
        rest = digits[len(prefix):]
        if digits.startswith(prefix) and len(rest) == 11 and rest.startswith("1"):
            return rest
    return digits


@functools.lru_cache(maxsize=8)
def _networks(text: str) -> tuple[Network, ...]:
    """``sms_allowed_networks`` parsed once per value (settings may change at run time in tests)."""
    return parse_networks(text)


def authorised(given: str | None, secret: str | None) -> bool:
    """Constant-time comparison; an unset (or empty) secret authorises nobody; bytes that are
    not UTF-8 in the header compare unequal (``http_api.edge.secret_matches``)."""
    return edge.secret_matches(given, secret)


async def _params(request: web.Request) -> tuple[dict[str, str], bool]:
    """The query parameters, and a form body's fields (first value wins); False: a form body that
    cannot be read as its Content-Type says (``edge.read_form``)."""
    params: dict[str, str] = dict(request.query)
    if request.method == "POST" and request.content_type in _FORM_TYPES:
        form = await edge.read_form(request)
        if form is None:
            return params, False
        params.update({k: v for k, v in form.items() if k not in params})
    return params, True


async def _text(request: web.Request, params: dict[str, str]) -> str:
    """The message: the ``text`` parameter, or a post-url body (after the secret is checked)."""
    if request.method != "POST" or request.content_type in _FORM_TYPES:
        return params.get("text", "")
    try:
        return await request.text()
    except (UnicodeDecodeError, LookupError):
        raise _BadRequest("bad request: the body is not text in its declared charset") from None


def _text_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, content_type="text/plain", charset="utf-8", status=status)


async def inbound(request: web.Request) -> web.Response:
    settings = platform_of(request).settings
    params, form_read = await _params(request)
    allowed = _networks(settings.sms_allowed_networks)
    if (allowed and not is_trusted(request.remote, allowed)) or not authorised(
            request.headers.get(SECRET_HEADER) or params.get(SECRET_PARAM), settings.sms_shared_secret):
        metrics.SMS_REQUESTS.labels("none", "forbidden").inc()
        return _text_response("forbidden", 403)
    sender = normalise_msisdn(params.get("from") or request.headers.get(KANNEL_FROM_HEADER))
    message_id = params.get("id")  # absent: no idempotency key; present, it must match (empty too)
    try:
        if not form_read:
            raise _BadRequest("bad request: the body is not the form its Content-Type names")
        if sender is None or (message_id is not None and not _MESSAGE_ID_RE.fullmatch(message_id)):
            raise _BadRequest("bad request: from must be a phone number, id 1-64 of [0-9A-Za-z_.:-]")
        text = await _text(request, params)  # any text a sender types is answered (a NUL: the help text)
    except _BadRequest as bad:
        metrics.SMS_REQUESTS.labels("none", "bad_request").inc()
        return _text_response(str(bad), 400)
    to = params.get("to") or request.headers.get(KANNEL_TO_HEADER) or ""
    if is_mpay_number(to, settings.mpay_sms_service_number):
        reply = await _mpay_answer(request, sender, text, message_id)
        return _text_response(reply)
    answer = await _answer(request, sender, text, message_id)
    metrics.SMS_REQUESTS.labels(answer.command, answer.outcome).inc()
    return _text_response(answer.reply)


def is_mpay_number(to: str, service_number: str) -> bool:
    """``to`` is the service number, alone or followed by up to 6 digits."""
    to = to.strip()
    return bool(service_number) and to.startswith(service_number) and (
        to[len(service_number):] == "" or re.fullmatch(r"[0-9]{1,6}", to[len(service_number):]) is not None
    )


async def _mpay_answer(request: web.Request, sender: str, text: str, message_id: str | None) -> str:
    ctx = platform_of(request)
    try:
        async with ctx.acquire() as conn:
            answer = await mpay_sms.handle(conn, env_of(request), sender, text, message_id)
    except Busy:
        metrics.BUSY_ANSWERS.labels("http").inc()
        metrics.MPAY_REQUESTS.labels("sms", "9001").inc()
        return mpay_codes.zh("9001")
    except Exception:  # the sender still gets an answer; no message text in the log (passwords, PINs)
        log.exception("mpay SMS failed")
        metrics.MPAY_REQUESTS.labels("sms", "9002").inc()
        return mpay_codes.zh("9002")
    metrics.MPAY_REQUESTS.labels("sms", answer.code).inc()
    return answer.reply


async def _answer(request: web.Request, sender: str, text: str, message_id: str | None) -> sms_channel.Answer:
    ctx = platform_of(request)
    busy = sms.fit(sms.BUSY, ctx.settings.sms_max_reply_chars)
    try:
        # no connection held here: the channel takes one only for its own statements, and an
        # operator's trade waits for its batch on the trade lane (recharge.kkt.sms_channel)
        return await sms_channel.handle(ctx.acquire, kkt_config(request), sender, text, message_id)
    except Busy:
        metrics.BUSY_ANSWERS.labels("http").inc()
        return sms_channel.Answer(busy, "unknown", "busy")
    except Exception:  # the sender still gets an answer; the log and the metric say what broke
        log.exception("SMS command failed")  # no message text: it may hold a card password
        return sms_channel.Answer(busy, "unknown", "error")


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, inbound, allow_head=False)  # a HEAD must not run a command
    app.router.add_post(PATH, inbound)
