"""Schemathesis hooks of the HTTP fuzzing run (chaos/api_fuzz.py; loaded with SCHEMATHESIS_HOOKS).

Read from the JSON file named by ``RECHARGE_FUZZ_CONFIG``. What they add to schemathesis:

- **How answers that are not JSON are read**, so every answer is validated against its
  schema: the card service's XML as ``http_api.kkt_openapi.trade_result`` reads it, plain text
  as its text.
- **Credentials** (the signed pass only): the admin token, the SMS secret (a header, or the
  delivery report's ``secret`` query field), a LICENSEKEY, the
  IVR secret, a customer's or an operator of the right role's bearer token are set as the
  operation's security scheme names them; a merchant's ``Sign`` over the exact body, the
  order API's envelope (the generated fields encrypted into ``data``, signed, mac'd), the
  SIM wallet's STK and POS requests (``X-MAC``) and the bank gateways' signed notices
  (chaos/api_fuzz_devices.py) are built in ``before_call``. A logout that succeeded is
  followed by a new login.
- **Figures**: cases and refusals per operation, and every answer per operation (HTTP status
  and the channel's code), saved after each call to the file ``stats`` names.
- **Checks of the platform's own promises**, beside every check schemathesis offers:
  ``refused_changes_nothing`` (a refused request leaves the money tables as they were) and,
  in the unsigned pass, ``unsigned_is_refused`` (a request without credentials is refused
  with the documented answer).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import schemathesis
from schemathesis.core import NOT_SET

from chaos.api_fuzz import BOOKS_SQL, MPAY, login
from chaos.api_fuzz_devices import Devices
from http_api.kkt_openapi import trade_result
from http_api.order_client import ClientIdentity, build_request, compact
from recharge.mpay import merchants

CONFIG: dict[str, Any] = json.loads(Path(os.environ["RECHARGE_FUZZ_CONFIG"]).read_text()) if os.environ.get(
    "RECHARGE_FUZZ_CONFIG") else {}
SIGNED = bool(CONFIG.get("signed"))
ORDER_PATHS = frozenset({"/APPLLogin", "/AcctQueryLNT", "/CreateAutoLoadOrder"})
KKT_SUCCESS = frozenset({"11", "18", "40", "44", "45", "47", "57"})  # a method's success codes (codes.TEXTS)


class _Books:
    """The money tables' fingerprint, read on one connection of a loop of its own."""

    def __init__(self, dsn: str) -> None:
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(dsn))

    def read(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.loop.run_until_complete(self.conn.fetchrow(BOOKS_SQL)))


BOOKS = _Books(CONFIG["dsn"]) if CONFIG else None
BEFORE: dict[str, dict[str, Any]] = {}  # case id → the books as its request left
DEVICES = Devices(CONFIG) if SIGNED else None
STATS: dict[str, Any] = {"cases": Counter(), "refused": Counter(), "answers": {}, "relogins": 0}


def _save_stats() -> None:
    if CONFIG:
        Path(CONFIG["stats"]).write_text(json.dumps({**STATS, "cases": dict(STATS["cases"]),
                                                     "refused": dict(STATS["refused"]),
                                                     "answers": {k: dict(v) for k, v in STATS["answers"].items()}}))


def answer(response: schemathesis.Response) -> str:
    """An answer as the figures count it: the HTTP status and the channel's code (``/mpay/v1``'s envelope
    code, an order API ``status``) or its plain-text word (``OK``, ``FAIL``)."""
    body = _json(response)
    if isinstance(body, dict):
        code = body.get("code", body.get("status"))
        return f"{response.status_code} {code}" if code is not None else str(response.status_code)
    if response.headers.get("content-type", [""])[0].startswith("text/plain") and len(response.content) <= 16:
        return f"{response.status_code} {response.content.decode('utf-8', 'replace')}"
    return str(response.status_code)


# --- answers that are not JSON

@schemathesis.deserializer("text/xml")
def _xml(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return trade_result(response.content)


@schemathesis.deserializer("text/plain")
def _text(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return response.content.decode("utf-8")


# --- credentials

def _schemes(case: schemathesis.Case) -> list[str]:
    raw = case.operation.definition.raw
    return [name for requirement in raw.get("security", []) for name in requirement]


def _operator_token(case: schemathesis.Case) -> str:
    roles = case.operation.definition.raw.get("x-roles") or ["ops"]
    tokens: dict[str, str] = CONFIG["operators"]
    return next((tokens[r] for r in roles if r in tokens), tokens["ops"])


@schemathesis.auth()
class Credentials:
    """Every credential of the signed pass, set as the operation's security scheme names it."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> dict[str, Any]:
        return CONFIG

    def set(self, case: schemathesis.Case, data: dict[str, Any], ctx: schemathesis.AuthContext) -> None:
        if not SIGNED:
            return
        headers: dict[str, str] = {}
        query: dict[str, str] = {}
        schemes = _schemes(case)
        if "adminBearer" in schemes:
            headers["Authorization"] = f"Bearer {data['admin_token']}"
        if "smsSecret" in schemes:
            headers["X-SMS-Secret"] = data["sms_secret"]
        if "licenseKey" in schemes:
            query["LICENSEKEY"] = data["license_key"]
        if "gatewaySecret" in schemes:
            headers["X-Gateway-Secret"] = data["ivr_secret"]
        if "bearer" in schemes:
            headers["Authorization"] = f"Bearer {data['customer']['token']}"
        if "operatorBearer" in schemes:
            headers["Authorization"] = f"Bearer {_operator_token(case)}"
        if case.operation.path == f"{MPAY}/sms/dlr":  # Kannel's delivery report: the secret is a query field
            query["secret"] = data["sms_secret"]
        case.headers.update(headers)
        case.query.update(query)


def _raw_body(case: schemathesis.Case) -> bytes:
    body = case.body
    if body is NOT_SET or body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _order_envelope(case: schemathesis.Case) -> bytes:
    """The generated (x-encrypted) fields as the order API wants them: encrypted, signed, mac'd."""
    order = CONFIG["order"]
    who = ClientIdentity(order["raw"], order["crt"], order["key_pem"])
    body = case.body
    if isinstance(body, dict):
        body = {**body, "platform": order["raw"]}  # the platform is the identity, as a key is
        return compact(build_request(who, body)).encode()
    # Zero padding cannot carry trailing NULs: the wire holds the text without them (what the
    # platform decrypts), as a real client's would. Seen in make chaos, seed 1497972983.
    text = _raw_body(case).decode("latin-1").rstrip("\x00")
    return compact(build_request(who, {}, plaintext=text)).encode()


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    """The counts, the books before the request, and the signatures that depend on the exact body."""
    STATS["cases"][case.operation.label] += 1
    if BOOKS is not None:
        BEFORE[case.id] = BOOKS.read()
    if not SIGNED:
        return
    if case.operation.path in ORDER_PATHS:
        kwargs["data"] = _order_envelope(case)
    elif DEVICES is not None and (signed := DEVICES.sign(case.operation.path, case.path_parameters or {},
                                                         None if case.body is NOT_SET else case.body)):
        kwargs["data"], headers = signed
        case.headers.update(headers)
    elif "merchantSign" in _schemes(case):
        raw = _raw_body(case) if case.method.upper() != "GET" else b""
        stamp = str(int(time.time()))
        path = case.formatted_path
        rid = str(case.headers.get("X-Request-Id", ""))
        message = merchants.signed_message(stamp, case.method.upper(), path, rid, raw)
        case.headers.update({"X-Merchant-Id": CONFIG["merchant"]["id"], "X-Timestamp": stamp,
                             "Sign": merchants.sign(CONFIG["merchant"]["key_pem"], message)})
        if raw:
            kwargs["data"] = raw


@schemathesis.hook
def after_call(context: schemathesis.HookContext, case: schemathesis.Case, response: schemathesis.Response) -> None:
    if refused(case, response):
        STATS["refused"][case.operation.label] += 1
    STATS["answers"].setdefault(case.operation.label, Counter())[answer(response)] += 1
    if SIGNED and case.operation.path == f"{MPAY}/auth/logout" and response.status_code == 200 and _code(response) == "0000":
        CONFIG["customer"]["token"] = login(CONFIG["base_url"], CONFIG["customer"]["login"],
                                            CONFIG["customer"]["password"])
        STATS["relogins"] += 1
    _save_stats()


# --- the platform's own checks

def _json(response: schemathesis.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _code(response: schemathesis.Response) -> str | None:
    body = _json(response)
    return body.get("code") if isinstance(body, dict) else None


def refused(case: schemathesis.Case, response: schemathesis.Response) -> bool | None:
    """Whether the answer refused the request (None: the channel's answer does not say, the SMS hook's 200)."""
    path = case.operation.path
    if response.status_code >= 400:
        return True
    if path in ORDER_PATHS:
        body = _json(response)
        return isinstance(body, dict) and body.get("status") == 0
    if path.startswith(MPAY):
        code = _code(response)
        return None if code is None else code != "0000"
    if path == "/s/get":
        if response.headers.get("content-type", [""])[0].startswith("text/plain"):
            return True
        try:
            records = trade_result(response.content).get("Record", [])
        except Exception:  # not the documented XML: the schema check reports it
            return None
        first = records[0] if records else {}
        code = first.get("PayInForm", first.get("Result"))
        return code is not None and code not in KKT_SUCCESS
    if path.startswith("/admin/"):
        return False
    return None


@schemathesis.check
def refused_changes_nothing(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                            case: schemathesis.Case) -> bool | None:
    """A refused request leaves every money table and the ledger's totals as they were."""
    before = BEFORE.pop(case.id, None)
    if before is None or not refused(case, response):
        return None
    after = BOOKS.read() if BOOKS else before
    STATS["books_checked"] = STATS.get("books_checked", 0) + 1
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    if changed:
        raise AssertionError(f"a refused request changed the books: {changed}")
    return True


@schemathesis.check
def unsigned_is_refused(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                        case: schemathesis.Case) -> bool | None:
    """The unsigned pass: an operation that needs credentials refuses a request without them, as documented."""
    if SIGNED:
        return None
    raw = case.operation.definition.raw
    if not raw.get("security") and "x-signed" not in raw and "X-MAC" not in json.dumps(raw.get("parameters", [])):
        return None
    if refused(case, response) is False or (response.status_code == 200 and case.operation.path == "/sms/inbound"):
        raise AssertionError(f"accepted without credentials: HTTP {response.status_code} {response.content[:200]!r}")
    return True
