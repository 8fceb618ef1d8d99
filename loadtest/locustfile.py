"""Locust users: simulated DD terminals with virtual cards, and HTTP users of every interface.

``TerminalUser`` is a recharge terminal on a blocking socket (``server.terminal_client``;
gevent makes it cooperative): it signs in with a virtual security module, then recharges
its virtual card order after order — one Locust request per DD request stage, named by
stage (``DD01`` … ``DD21``, request type ``DD``), timed from sending the frame to its
answer. A non-zero result code, a closed connection or a bad answer is a failure; failures
provoked on purpose (``LOADTEST_DELIBERATE_FAILURE_RATE``) say ``deliberate`` in their text.

The HTTP users: ``OrderApiUser`` (APPLLogin → CreateAutoLoadOrder → AcctQueryLNT, signed and
enveloped), ``KktRestUser`` (``GET /s/get?method=cTRequest`` balance queries), ``KktSoapUser``
(``soapCardTrade`` over ``/s/sp.php``) and ``SmsUser`` (``/sms/inbound`` as an SMS operator);
for the mobile payment account ``MpaySmsUser`` (``CX`` to 10658888), ``MpayWebUser`` (website
login, balance, history) and ``MpayMerchantUser`` (RSA-signed remote payments and polls); for the SIM
wallet ``WalletPosUser`` (offline purchases, batch uploads) and ``WalletStkUser`` (STK), from
``loadtest.wallet_users``.

Everything the users need comes from the plan file ``loadtest.provision`` writes
(``LOADTEST_PLAN``); ``loadtest.run`` sets it up. Knobs (environment): ``LOADTEST_PACING_S``
(seconds per terminal iteration, default 10), ``LOADTEST_CLAIMS`` (folder where terminals are
claimed, one user each), ``LOADTEST_DELIBERATE_FAILURE_RATE`` (0–1, default 0),
``LOADTEST_SMS_SECRET`` (the SMS gateway's shared secret), and
``LOADTEST_RESULT`` (where the final figures are written as JSON once the users stopped).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import secrets
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, User, constant_pacing, events, task

from core_ext import Frame
from core_ext.virtual_card import VirtualCard
from core_ext.virtual_sam import VirtualSAM
from loadtest.provision import Plan, PlannedTerminal
from loadtest.wallet_users import WalletPosUser, WalletStkUser  # noqa: F401 (Locust finds them here)
from recharge.keys import MasterKeys, load_keys
from server import terminal_client as terminal_flows
from server.terminal_client import ConnectionClosed, FlowFailed, TerminalClient, TerminalFlow

DELIBERATE = "deliberate"
UNKNOWN_ORDER = "9" * 20  # never issued: today's orders start with today's date


@cache
def plan() -> Plan:
    return Plan.read(Path(os.environ["LOADTEST_PLAN"]))


@cache
def master_keys() -> MasterKeys:
    return load_keys(Path(plan().key_file))


def pacing_s() -> float:
    return float(os.environ.get("LOADTEST_PACING_S", "10"))


def deliberate_failure_rate() -> float:
    return float(os.environ.get("LOADTEST_DELIBERATE_FAILURE_RATE", "0"))


class StageFailed(Exception):
    """A DD answer that ends the flow (non-zero result, or a flow byte other than expected), or no answer."""


class _Claims:
    """Each terminal goes to one user, across Locust worker processes (O_EXCL files)."""

    _next = itertools.count()

    @classmethod
    def claim(cls, terminals: list[PlannedTerminal]) -> PlannedTerminal:
        folder = Path(os.environ.get("LOADTEST_CLAIMS", Path(os.environ["LOADTEST_PLAN"]).parent / "claims"))
        folder.mkdir(parents=True, exist_ok=True)
        start = next(cls._next) * 7919 + os.getpid()  # spread processes over the list
        for offset in range(len(terminals)):
            terminal = terminals[(start + offset) % len(terminals)]
            try:
                os.close(os.open(folder / terminal.code, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            return terminal
        raise RuntimeError(f"more terminal users than the {len(terminals)} provisioned terminals")


class TerminalUser(User):
    """A DD recharge terminal with its security module and a customer's card."""

    wait_time = constant_pacing(pacing_s())
    weight = 10

    def on_start(self) -> None:
        p = plan()
        keys = master_keys()
        self.terminal = _Claims.claim(p.terminals)
        self.module = VirtualSAM.from_master(self.terminal.pki, keys.signin)
        self.card = VirtualCard(self.terminal.card_no, 0, keys.load, keys.tac, keys.maint)
        self.client = TerminalClient(p.dd_host, p.dd_port, self.terminal.code, self.terminal.pki, timeout_s=30,
                                     timings=self._report)
        self.amount = p.amount_cents
        self.orders = iter(self.terminal.orders)
        self.loaded: list[str] = []
        self.signed_in = False
        self.iteration = 0
        self.failure_note = ""  # appended to the failures of a deliberately failing request

    def on_stop(self) -> None:
        self.client.close()

    def _report(self, request: bytes, answer: Frame | None, seconds: float, error: BaseException | None) -> None:
        """One Locust request per DD request stage, named by it, timed from the frame to its answer."""
        name = f"DD{request[1]:02X}"
        exception: Exception | None = None
        if isinstance(error, FlowFailed):
            what = f"flow 0x{error.flow:02X}, expected the end" if error.expected_end else f"answered 0x{error.result:02X}"
            exception = StageFailed(f"{name}{':' if error.expected_end else ''} {what}{self.failure_note}")
        elif error is not None:
            exception = StageFailed(f"{name}: {type(error).__name__} {error}")
        self.environment.events.request.fire(
            request_type="DD", name=name, response_time=seconds * 1000,
            response_length=len(answer.info) if answer is not None else 0, exception=exception, context={},
        )

    def _run(self, flow: TerminalFlow) -> Frame:
        try:
            return self.client.run_alone(flow)
        except (FlowFailed, OSError, ConnectionClosed) as exc:  # reported per stage by ``_report``
            raise StageFailed(str(exc)) from exc

    # --- flows (the card's work happens between the timed stages, as on a real reader)

    def sign_in(self) -> None:
        self._run(terminal_flows.sign_in(self.client.messages, self.module))
        self.signed_in = True

    def recharge(self, order_no: str) -> None:
        m = self.client.messages

        def flow() -> TerminalFlow:
            dd18 = yield from terminal_flows.recharge(m, self.card, order_no, self.amount, receipt=False)
            self.loaded.append(order_no)
            yield from terminal_flows.checked(m.dd19(order_no), end=True)
            return dd18

        self._run(flow())

    def deliberate_unknown_order(self) -> None:
        self.failure_note = f" ({DELIBERATE})"
        try:
            self._run(terminal_flows.checked(self.client.messages.dd11(self.amount, UNKNOWN_ORDER)))
        finally:
            self.failure_note = ""

    def query(self, order_no: str) -> None:
        self._run(terminal_flows.query(self.client.messages, order_no))

    @task
    def work(self) -> None:
        """Sign in when needed, then one recharge; every fifth turn a result query too."""
        self.iteration += 1
        try:
            if not self.signed_in:
                self.sign_in()
            if random.random() < deliberate_failure_rate():
                self.deliberate_unknown_order()
                return
            order_no = next(self.orders, None)
            if order_no is not None:
                self.recharge(order_no)
            if self.loaded and (order_no is None or self.iteration % 5 == 0):
                self.query(self.loaded[-1])
        except StageFailed as exc:
            if "0xBB" in str(exc):  # the sign-in expired (business day over): sign in next turn
                self.signed_in = False


# --- HTTP users


class OrderApiUser(FastHttpUser):
    """A third-party platform: APPLLogin, CreateAutoLoadOrder for a card, AcctQueryLNT of it."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    def on_start(self) -> None:
        from http_api import order_client

        info = plan().order_api
        self.order_client = order_client
        self.who = order_client.ClientIdentity(
            info["platform_raw"], info["crt_version"], Path(info["private_key_file"]).read_text(encoding="ascii")
        )
        keys = master_keys()
        card_no = f"{info['card_prefix']}{secrets.randbelow(info['cards']):08d}"  # registered: orders need a known card
        self.card = VirtualCard(card_no, 0, keys.load, keys.tac, keys.maint)
        self.userid = f"loadtest-{secrets.token_hex(4)}"

    def _post(self, endpoint: str, secret: dict[str, Any], **clear: Any) -> dict[str, Any] | None:
        body = self.order_client.build_request(
            self.who, {"platform": self.who.platform_raw, "userinfo": {"userid": self.userid}, **secret},
            extra_clear=clear or None,
        )
        with self.client.post(f"/{endpoint}", json=body, name=endpoint, catch_response=True) as response:
            try:
                reply = self.order_client.open_reply(response.json())
            except (ValueError, KeyError, TypeError) as exc:
                response.failure(f"unreadable reply: {type(exc).__name__}")
                return None
            if reply.get("status") != 1:
                response.failure(f"status {reply.get('status')}: {reply.get('errmsg')}")
                return None
            return reply

    @task
    def order(self) -> None:
        login = self._post("APPLLogin", {"type": 5})
        if login is None:
            return
        reqinfo = [self.card.run_script(bytes.fromhex(script)).hex() for script in login["toreader"]]
        common = {"serial": login["serial"], "step": 0, "reqinfo": reqinfo}
        created = self._post(
            "CreateAutoLoadOrder",
            {**common, "chargeamt": plan().amount_cents, "chargetype": 0, "transtype": 1},
            biz_serial_no=f"lt-{secrets.token_hex(12)}",
        )
        if created is None:
            return
        self._post("AcctQueryLNT", {**common, "qrycondition": "orderid", "orderid": created["order"]})


def _kkt_query(card_no: str) -> dict[str, str]:
    kkt = plan().kkt
    return {
        "LICENSEKEY": kkt["license_key"], "TRADETYPE": "0011", "TRADEMODE": "0", "CARDNO": card_no,
        "CARDPWD": hashlib.md5(kkt["password"].encode()).hexdigest(), "POSCODE": kkt["terminal"],
        "AMOUNT": "", "ITEMCODE": "", "STANCE_REV": "", "COPNO": kkt["merchant"],
        "REQID": secrets.token_hex(8),
    }


_PAYINFORM = re.compile(r"<PayInForm>(\d+)</PayInForm>")


class KktRestUser(FastHttpUser):
    """A KaKaTong POS website: stored-value balance queries over REST (seed 002's cTRequest)."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    @task
    def balance(self) -> None:
        card = random.choice(plan().kkt["cards"])
        url = "/s/get?" + urlencode({"method": "cTRequest", **_kkt_query(card)})
        with self.client.get(url, name="/s/get cTRequest 0011", catch_response=True) as response:
            found = _PAYINFORM.search(response.text or "")
            if found is None or found.group(1) != "11":
                response.failure(f"PayInForm {found.group(1) if found else 'missing'}")


_SOAP = """<?xml version="1.0" encoding="UTF-8"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xmlns:SOAP-ENC="http://schemas.xmlsoap.org/soap/encoding/"
 SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><SOAP-ENV:Body>
<ns1:soapCardTrade xmlns:ns1="urn:KaKaTong">{params}</ns1:soapCardTrade></SOAP-ENV:Body></SOAP-ENV:Envelope>"""
_MAP_PAYINFORM = re.compile(r"<key[^>]*>PayInForm</key>\s*<value[^>]*>(\d+)</value>")


class KktSoapUser(FastHttpUser):
    """The seed's PHP SoapClient: ``soapCardTrade`` with nine positional arguments (rpc/encoded)."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    @task
    def balance(self) -> None:
        q = _kkt_query(random.choice(plan().kkt["cards"]))
        args = [q["LICENSEKEY"], q["TRADETYPE"], q["TRADEMODE"], q["CARDNO"], plan().kkt["password"],
                q["POSCODE"], "", "", ""]
        params = "".join(f'<param{i} xsi:type="xsd:string">{a}</param{i}>' for i, a in enumerate(args))
        with self.client.post(
            "/s/sp.php", data=_SOAP.format(params=params), name="/s/sp.php soapCardTrade 0011",
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:KaKaTong#soapCardTrade"'},
            catch_response=True,
        ) as response:
            found = _MAP_PAYINFORM.search(response.text or "")
            if response.status_code != 200 or found is None or found.group(1) != "11":
                response.failure(f"HTTP {response.status_code}, PayInForm {found.group(1) if found else 'missing'}")


class SmsUser(FastHttpUser):
    """The SMS gateway relaying an operator's balance queries (``YECX*card``)."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    @task
    def balance(self) -> None:
        sms = plan().sms
        query = {"from": sms["from"], "to": sms["to"], "text": f"YECX*{random.choice(sms['cards'])}",
                 "id": secrets.token_hex(8)}
        # The gateway's shared secret comes from the environment, never from the plan file.
        headers = {"X-SMS-Secret": os.environ.get("LOADTEST_SMS_SECRET", "")}
        with self.client.get("/sms/inbound?" + urlencode(query), name="/sms/inbound YECX", headers=headers,
                             catch_response=True) as response:
            text = response.text or ""
            # A refusal is still HTTP 200 (gateways show 5xx as "could not fetch"): read the text.
            if response.status_code != 200 or "余额" not in text or "失败" in text:
                response.failure(f"HTTP {response.status_code}: {text[:40]}")


class MpaySmsUser(FastHttpUser):
    """A subscriber texting ``CX`` to 10658888 (the mobile payment balance query)."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    @task
    def balance(self) -> None:
        query = {"from": random.choice(plan().mpay["msisdns"]), "to": "10658888", "text": "CX",
                 "id": secrets.token_hex(8)}
        headers = {"X-SMS-Secret": os.environ.get("LOADTEST_SMS_SECRET", "")}
        with self.client.get("/sms/inbound?" + urlencode(query), name="/sms/inbound mpay CX", headers=headers,
                             catch_response=True) as response:
            text = response.text or ""
            if response.status_code != 200 or not text.startswith("现金账户余额"):
                response.failure(f"HTTP {response.status_code}: {text[:40]}")


def _mpay_ok(response: Any) -> dict[str, Any] | None:
    """The envelope's data when the code is 0000, else the response is marked failed."""
    try:
        reply = response.json()
    except ValueError:
        reply = {}
    if response.status_code != 200 or reply.get("code") != "0000":
        response.failure(f"HTTP {response.status_code}, code {reply.get('code')}")
        return None
    return dict(reply.get("data") or {})


class MpayWebUser(FastHttpUser):
    """A website customer: logs in once, then reads the balance and the history."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    def on_start(self) -> None:
        mpay = plan().mpay
        self.token = ""
        with self.client.post("/mpay/v1/auth/login", json={"login": random.choice(mpay["msisdns"]),
                                                           "password": mpay["login_password"]},
                              name="/mpay/v1/auth/login", catch_response=True) as response:
            data = _mpay_ok(response)
            self.token = str(data["token"]) if data else ""

    @task
    def pages(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        for path in ("/mpay/v1/me/balance", "/mpay/v1/me/history"):
            with self.client.get(path, headers=headers, name=path, catch_response=True) as response:
                _mpay_ok(response)


class MpayMerchantUser(FastHttpUser):
    """A merchant creating RSA-signed remote payments and polling them."""

    wait_time = constant_pacing(pacing_s())
    weight = 1

    def _signed(self, method: str, path: str, body: bytes) -> dict[str, str]:
        import time

        from recharge.mpay import merchants

        mpay, rid, stamp = plan().mpay, secrets.token_hex(12), str(int(time.time()))
        key = _merchant_key(mpay["merchant_key_file"])
        sign = merchants.sign(key, merchants.signed_message(stamp, method, path, rid, body))
        return {"X-Merchant-Id": mpay["merchant"], "X-Timestamp": stamp, "X-Request-Id": rid, "Sign": sign,
                "Content-Type": "application/json"}

    @task
    def pay(self) -> None:
        mpay = plan().mpay
        order_no = secrets.token_hex(10)
        body = json.dumps({"merchant_order_no": order_no, "msisdn": random.choice(mpay["msisdns"]),
                           "amount": 100, "subject": "load"}).encode()
        with self.client.post("/mpay/v1/merchant/payments", data=body.decode("utf-8"), name="/mpay/v1/merchant/payments",
                              headers=self._signed("POST", "/merchant/payments", body),
                              catch_response=True) as response:
            _mpay_ok(response)
        path = f"/merchant/payments/{order_no}"
        with self.client.get("/mpay/v1" + path, headers=self._signed("GET", path, b""),
                             name="/mpay/v1/merchant/payments/{merchant_order_no}", catch_response=True) as response:
            _mpay_ok(response)


@cache
def _merchant_key(path: str) -> bytes:
    return Path(path).read_bytes()


_environment: list[Any] = []


@events.init.add_listener
def _remember(environment: Any, **_: Any) -> None:
    _environment.append(environment)


def result_of(environment: Any) -> dict[str, Any]:
    """Final figures per request name, and every distinct failure (deliberate ones marked)."""
    stats = environment.stats
    by_request = {
        f"{entry.method} {entry.name}": {
            "requests": entry.num_requests, "failures": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5), "p99_ms": entry.get_response_time_percentile(0.99),
            "max_ms": entry.max_response_time, "rps": round(entry.total_rps, 2),
        }
        for entry in sorted(stats.entries.values(), key=lambda e: (e.method, e.name))
    }
    failures = [
        {"name": f"{e.method} {e.name}", "error": str(e.error), "occurrences": e.occurrences,
         "deliberate": DELIBERATE in str(e.error)}
        for e in stats.errors.values()
    ]
    return {
        "requests": stats.total.num_requests, "failures": stats.total.num_failures,
        "rps": round(stats.total.total_rps, 2),
        "p50_ms": stats.total.get_response_time_percentile(0.5),
        "p99_ms": stats.total.get_response_time_percentile(0.99),
        "deliberate_failures": sum(f["occurrences"] for f in failures if f["deliberate"]),
        "unexpected_failures": sum(f["occurrences"] for f in failures if not f["deliberate"]),
        "failure_kinds": failures, "by_request": by_request,
    }


@events.quitting.add_listener
def _exit_status(environment: Any, **_: Any) -> None:
    """Failures other than deliberate ones make Locust exit 1 (counted before the stop phase)."""
    environment.process_exit_code = 1 if result_of(environment)["unexpected_failures"] else 0


@events.quit.add_listener
def _write_result(exit_code: int, **_: Any) -> None:
    """After the users stopped: the complete figures, to ``LOADTEST_RESULT`` (master/local only)."""
    from locust.runners import WorkerRunner

    target = os.environ.get("LOADTEST_RESULT")
    if not target or not _environment or isinstance(_environment[0].runner, WorkerRunner):
        return
    Path(target).write_text(json.dumps(result_of(_environment[0]), indent=1), encoding="utf-8")
