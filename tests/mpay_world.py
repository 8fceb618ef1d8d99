"""Test support for the mobile payment account: subscribers, cards, merchants, SMS, outbox.

Every helper makes fresh numbers (no two tests share a subscriber), goes through the
domain's own functions for set-up (registry, card pool, merchants) and through the real
server for what is under test (the SMS hook, the JSON API).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from Crypto.PublicKey import RSA

from recharge.mpay import accounts, cards, events, merchants, outbox, registry
from recharge.mpay.env import Env

SECRET = "test-sms-secret"
SERVICE = "10658888"


def new_msisdn() -> str:
    return "139" + "".join(secrets.choice("0123456789") for _ in range(8))


def new_pin() -> str:
    return "18" + "".join(secrets.choice("0123456789") for _ in range(16))


def new_serial() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(5)) + "18" + "".join(
        secrets.choice("0123456789") for _ in range(10))


_KEY: RSA.RsaKey | None = None


def merchant_key() -> RSA.RsaKey:
    """One 2048-bit key pair for every test merchant of the run (generating is slow)."""
    global _KEY
    if _KEY is None:
        _KEY = RSA.generate(2048)
    return _KEY


@dataclass
class MpayWorld:
    pool: asyncpg.Pool
    env: Env
    base: str
    session: aiohttp.ClientSession
    data_dir: Path = field(default_factory=Path)

    async def subscriber(self, msisdn: str | None = None, *, name: str | None = "张三", status: str = "normal",
                         province: str = "430000", brand: str = "GOTONE", id_number: str = "430102199001011234") -> str:
        msisdn = msisdn or new_msisdn()
        body: dict[str, Any] = {"province": province, "brand": brand, "status": status}
        if name is not None:
            body |= {"name": name, "id_type": "id_card", "id_number": id_number}
        async with self.pool.acquire() as conn, conn.transaction():
            await events.set_subscribers(conn, self.env, [registry.validate(msisdn, body)], "test")
        return msisdn

    async def sms(self, sender: str, text: str, message_id: str | None = None, *, to: str = SERVICE) -> str:
        params = {"secret": SECRET, "from": sender, "to": to, "text": text}
        if message_id is not None:
            params["id"] = message_id
        async with self.session.get(f"{self.base}/sms/inbound", params=params) as resp:
            body = await resp.text()
            assert resp.status == 200, body
            assert resp.content_type == "text/plain"
            assert not body.endswith("\n")
            return body

    async def notices(self, msisdn: str) -> list[str]:
        """Every notice queued for a number (clear text; a sensitive one decrypted), oldest first."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT text, text_enc FROM mpay_outbox WHERE msisdn = $1 ORDER BY created_at, id", msisdn)
            return [outbox.text_of(self.env.keys, r) or "" for r in rows]

    async def opened(self, name: str | None = "张三", **kwargs: Any) -> tuple[str, dict[str, str]]:
        """A subscriber with an account opened over SMS; returns (msisdn, initial secrets)."""
        msisdn = await self.subscriber(name=name, **kwargs)
        assert (await self.sms(msisdn, "KT A")).startswith("手机支付开户成功")
        text = (await self.notices(msisdn))[-1]
        lp = text.split("登录密码")[1].split(",")[0]
        pp = text.split("支付密码")[1].split(",")[0]
        alias = text.split("别名")[1].split("。")[0]
        return msisdn, {"login": lp, "pay": pp, "alias": alias}

    async def set_pay_password(self, msisdn: str, old: str, new: str = "135790") -> str:
        from recharge.mpay import profile

        async with self.pool.acquire() as conn, conn.transaction():
            account = await accounts.live_by_msisdn(conn, msisdn, lock=True)
            await profile.change(conn, self.env, account, "pay", old, new)
        return new

    async def card(self, face_yuan: int = 20, *, province: str = "430000", expiry: str = "2099-12-31") -> str:
        pin = new_pin()
        rows = cards.parse_pool(f"serial,pin,face_yuan,province,expiry\n{new_serial()},{pin},{face_yuan},"
                                f"{province},{expiry}\n")
        async with self.pool.acquire() as conn, conn.transaction():
            await cards.import_pool(conn, self.env, rows)
        return pin

    async def merchant(self, category: str = "DIGITAL", name: str = "数字商城") -> str:
        merchant_id = "T" + secrets.token_hex(5).upper()
        pem = merchant_key().publickey().export_key().decode()
        async with self.pool.acquire() as conn:
            await merchants.add(conn, merchant_id, name, category, pem)
        return merchant_id

    async def open_wallet(self, msisdn: str) -> str:
        """An open SIM wallet on a bound card for the number's account, as the STK's ``wallet.open``
        leaves it (SPEC 7.2); returns the card number."""
        card_no = "7310" + "".join(secrets.choice("0123456789") for _ in range(12))
        async with self.pool.acquire() as conn, conn.transaction():
            account_id = (await accounts.live_by_msisdn(conn, msisdn))["id"]
            await conn.execute("INSERT INTO wallet_cards (card_no, status, msisdn, account_id, bound_at)"
                               " VALUES ($1, 'bound', $2, $3, now())", card_no, msisdn, account_id)
            await conn.execute("INSERT INTO wallets (account_id, card_no, state) VALUES ($1, $2, 'open')",
                               account_id, card_no)
        return card_no

    async def account(self, msisdn: str) -> asyncpg.Record:
        async with self.pool.acquire() as conn:
            row = await accounts.live_by_msisdn(conn, msisdn)
        assert row is not None
        return row

    async def balances(self, msisdn: str) -> accounts.Figures:
        async with self.pool.acquire() as conn:
            return await accounts.balances(conn, await accounts.live_by_msisdn(conn, msisdn))

    async def snapshot(self, msisdn: str) -> tuple[Any, ...]:
        """What a refusal must leave unchanged: balances, transfers, the account's business columns."""
        async with self.pool.acquire() as conn:
            acct = await conn.fetchrow(
                "SELECT status, kind, alias, login_hash, pay_hash, bank_card FROM mpay_accounts"
                " WHERE msisdn = $1 OR former_msisdn = $1 ORDER BY id DESC LIMIT 1", msisdn)
            transfers = await conn.fetchval("SELECT count(*) FROM transfers")
        figures = await self.balances(msisdn) if acct and acct["status"] in accounts.LIVE else None
        return (tuple(acct) if acct else None, figures, transfers)


_DOCUMENT: dict[str, Any] = {}


def reply_validator(doc: dict[str, Any], method: str, path: str, status: int) -> tuple[Any, str | None]:
    """The validator of ``status``'s JSON reply to ``method path`` in the OpenAPI document, and the
    path template it matched (None: no such path or method, answered by the refusal envelope)."""
    import jsonschema

    bare = path.split("?")[0]
    template = next((t for t in doc["paths"] if re.fullmatch(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(t)), bare)),
                    None)
    op = doc["paths"][template].get(method.lower()) if template else None
    if op is None:
        schema: dict[str, Any] = {"$ref": "#/components/schemas/Refusal"}
        template = None
    else:
        assert str(status) in op["responses"], f"{method} {template}: HTTP {status} is not in the document"
        schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator({**schema, "components": doc["components"]},
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return validator, template


@dataclass
class Api:
    """A client of ``/mpay/v1`` that checks every reply against its operation in the served OpenAPI
    document (the envelope, and a success's ``data``); ``seen`` is every (method, path template)
    that answered ``0000`` so."""

    world: MpayWorld
    counter: int = 0
    seen: set[tuple[str, str]] = field(default_factory=set)

    async def document(self) -> dict[str, Any]:
        if not _DOCUMENT:
            async with self.world.session.get(f"{self.world.base}/mpay/v1/openapi.json") as resp:
                assert resp.status == 200
                _DOCUMENT.update(await resp.json())
        return _DOCUMENT

    def rid(self) -> str:
        self.counter += 1
        return f"t{secrets.token_hex(6)}-{self.counter}"

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   rid: str | None = "auto", headers: dict[str, str] | None = None,
                   raw: bytes | None = None, expect_fault: bool = False) -> tuple[int, dict[str, Any], bytes]:
        """``expect_fault``: a test that provokes a platform fault lets the 500 through."""
        import json

        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        if rid == "auto" and method == "POST":
            rid = self.rid()
        if rid and rid != "auto":
            h["X-Request-Id"] = rid
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        async with self.world.session.request(method, f"{self.world.base}/mpay/v1{path}", data=data,
                                              headers=h) as resp:
            content = await resp.read()
            assert resp.status < 500 or resp.status == 503 or expect_fault, content
            reply = json.loads(content)
        validator, template = reply_validator(await self.document(), method, path, resp.status)
        validator.validate(reply)
        if template is not None and reply["code"] == "0000":
            self.seen.add((method, template))
        return resp.status, reply, content

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        status, reply, _ = await self.call(method, path, body, **kw)
        assert (status, reply["code"]) == (200, "0000"), reply
        return dict(reply["data"])

    async def code(self, method: str, path: str, body: Any = None, **kw: Any) -> str:
        _, reply, _ = await self.call(method, path, body, **kw)
        return str(reply["code"])

    async def login(self, login: str, password: str, *, new_password: str | None = "Passw0rd1") -> str:
        data = await self.ok("POST", "/auth/login", {"login": login, "password": password})
        if data["must_change_password"] and new_password:
            await self.ok("POST", "/me/password/login", {"old": password, "new": new_password}, token=data["token"])
        return str(data["token"])

    async def operator(self, role: str, hall: str | None = None) -> str:
        from recharge.mpay import sessions

        operator_id = f"{role}{secrets.token_hex(4)}"
        async with self.world.pool.acquire() as conn:
            password = await sessions.add_operator(conn, self.world.env, operator_id, role, hall)
        return str((await self.ok("POST", "/ops/login", {"operator": operator_id, "password": password}))["token"])

    async def merchant_call(self, merchant: str, method: str, path: str, body: Any = None, *, rid: str | None = None,
                            sign: str | None = None, stamp: int | None = None) -> tuple[int, dict[str, Any], bytes]:
        import json
        import time

        raw = json.dumps(body).encode() if body is not None else b""
        rid = rid or self.rid()
        stamp_text = str(stamp if stamp is not None else int(time.time()))
        message = merchants.signed_message(stamp_text, method, path, rid, raw)
        signature = sign or merchants.sign(merchant_key().export_key(), message)
        headers = {"X-Merchant-Id": merchant, "X-Timestamp": stamp_text, "Sign": signature}
        return await self.call(method, path, raw=raw if body is not None else None, rid=rid, headers=headers)
