"""The mobile payment account's demo data (SPEC 5, section 6 part), created idempotently.

Registry ``13800138000``–``13800138005`` as SPEC 5 lists them, merchants ``DEMODIG``
(DIGITAL, 数字商城) and ``DEMOGEN`` (GENERAL, 百货商城) with RSA key pairs generated into
``<data_dir>/mpay/`` (demo only, never in the repository), and one Hunan prepaid card of
each face value, one expired and one of Guangdong, with the fixed demo PINs of
``DEMO_CARDS``; operators ``boss1``, ``hall1`` (hall ``HN0001``), ``cs1``, ``ops1`` with demo
passwords, and the bank gateways ``icbc`` and ``unionpay`` with key pairs in
``<data_dir>/mpay/gw_<id>_private.pem`` (what the simulated bank signs with;
docs/OPERATIONS.md lists them all). Nothing already present is changed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import asyncpg
from Crypto.PublicKey import RSA

from recharge.config import Settings
from recharge.keys import MasterKeys
from recharge.mpay import bank, cards, events, merchants, registry, sessions
from recharge.mpay.env import Env

DEMO_SUBSCRIBERS: list[dict[str, str]] = [
    {"msisdn": "13800138000", "name": "张三", "id_type": "id_card", "id_number": "430102199001011234",
     "province": "430000"},
    {"msisdn": "13800138001", "province": "430000"},
    {"msisdn": "13800138002", "name": "王五", "id_type": "id_card", "id_number": "430102199202021234",
     "province": "430000", "brand": "SZX_STD"},
    {"msisdn": "13800138003", "name": "赵六", "id_type": "id_card", "id_number": "430102199303031234",
     "province": "430000", "status": "suspended_oneway"},
    {"msisdn": "13800138004", "name": "李四", "id_type": "id_card", "id_number": "440102199101011234",
     "province": "440000"},
    {"msisdn": "13800138005", "name": "钱七", "id_type": "id_card", "id_number": "430102199404041234",
     "province": "430000", "status": "lost"},
]
DEMO_OPERATORS = (("boss1", "boss", None), ("hall1", "counter", "HN0001"), ("cs1", "cs", None), ("ops1", "ops", None))
DEMO_OPERATOR_PASSWORD = "demo-{id}-pw"  # demo only, listed in docs/OPERATIONS.md
DEMO_GATEWAYS = ("icbc", "unionpay")
DEMO_MERCHANTS = (("DEMODIG", "数字商城", "DIGITAL"), ("DEMOGEN", "百货商城", "GENERAL"))
# serial, PIN, face yuan, province, expiry — demo only
DEMO_CARDS = [
    *((f"43000180000000{i:03d}", f"18000000000000{face:04d}", face, "430000", "2099-12-31")
      for i, face in enumerate(cards.FACES_YUAN)),
    ("43000180000000900", "180000000000009001", 50, "430000", "2020-01-01"),
    ("44000180000000901", "180000000000009002", 50, "440000", "2099-12-31"),
]


def key_path(data_dir: Path, name: str) -> Path:
    return data_dir / "mpay" / f"{name}_private.pem"


def ensure_key(path: Path) -> str:
    """The public PEM of a demo key pair, the private half generated into ``path`` if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = RSA.generate(2048)
        path.write_bytes(key.export_key())
        path.chmod(0o600)
    return RSA.import_key(path.read_bytes()).publickey().export_key().decode("ascii")


async def seed(conn: asyncpg.Connection, keys: MasterKeys, data_dir: Path, settings: Settings | None = None) -> None:
    env = Env.of(settings or Settings(), keys)
    async with conn.transaction():
        for fields in DEMO_SUBSCRIBERS:
            if await registry.get(conn, fields["msisdn"]) is None:
                sub = registry.validate(fields["msisdn"], {k: v for k, v in fields.items() if k != "msisdn"})
                await events.set_subscribers(conn, env, [sub], "demo")
        for merchant_id, name, category in DEMO_MERCHANTS:
            if await merchants.get(conn, merchant_id) is None:
                await merchants.add(conn, merchant_id, name, category, ensure_key(key_path(data_dir, merchant_id)))
        for operator_id, role, hall in DEMO_OPERATORS:
            if await sessions.operator(conn, operator_id) is None:
                await sessions.add_operator(conn, env, operator_id, role, hall,
                                            DEMO_OPERATOR_PASSWORD.format(id=operator_id))
        for gateway in DEMO_GATEWAYS:
            if not await conn.fetchval("SELECT 1 FROM mpay_gateways WHERE id = $1", gateway):
                await bank.set_gateway_key(conn, gateway, ensure_key(key_path(data_dir, f"gw_{gateway}")))
        stored = {r["serial"] for r in await conn.fetch("SELECT serial FROM mpay_prepaid_cards")}
        rows = [cards.CardRow(s, p, f * 100, prov, dt.date.fromisoformat(e))
                for s, p, f, prov, e in DEMO_CARDS if s not in stored]
        if rows:
            await cards.import_pool(conn, env, rows)
