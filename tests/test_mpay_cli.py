"""``rechargectl mpay …`` through the real CLI entry point against the test database, and the demo data."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app import mpay_demo
from app.cli import main
from recharge.mpay import registry
from tests.mpay_world import new_msisdn, new_pin, new_serial

pytestmark = pytest.mark.usefixtures("key_file")


async def cli(database_url: str, *argv: str) -> int:
    return await asyncio.to_thread(main, [*argv[:3], "--database-url", database_url, *argv[3:]])


async def test_registry_set_and_import_all_or_none(database_url: str, conn: asyncpg.Connection,
                                                   tmp_path: Path) -> None:
    a, b, c = new_msisdn(), new_msisdn(), new_msisdn()
    assert await cli(database_url, "mpay", "registry", "set", a, "--province", "430000", "--name", "张三",
                     "--id-type", "id_card", "--id-number", "430102199001011234") == 0
    sub = await registry.get(conn, a)
    assert sub is not None and sub.real_name and sub.status == "normal"
    assert await cli(database_url, "mpay", "registry", "set", a, "--province", "4300") == 2
    good = f"msisdn,name,id_type,id_number,province,brand,status\n{b},李四,id_card,X1,440000,,normal\n"
    bad = good + f"{c},,,,430000,,nonsense\n"
    (tmp_path / "bad.csv").write_text(bad, encoding="utf-8")
    assert await cli(database_url, "mpay", "registry", "import", str(tmp_path / "bad.csv")) == 2
    assert await registry.get(conn, b) is None  # none of the file
    (tmp_path / "good.csv").write_text(good + f"+86{c},,,,430000,SZX_STD,normal\n", encoding="utf-8")
    assert await cli(database_url, "mpay", "registry", "import", str(tmp_path / "good.csv")) == 0
    got = await registry.get(conn, c)
    assert got is not None and got.brand == "SZX_STD" and not got.real_name


async def test_cards_import_refuses_a_file_with_a_repeat(database_url: str, conn: asyncpg.Connection,
                                                         tmp_path: Path) -> None:
    pin, serial = new_pin(), new_serial()
    header = "serial,pin,face_yuan,province,expiry\n"
    (tmp_path / "dup.csv").write_text(header + f"{serial},{pin},20,430000,2099-01-01\n"
                                      f"{new_serial()},{pin},20,430000,2099-01-01\n", encoding="utf-8")
    assert await cli(database_url, "mpay", "cards", "import", str(tmp_path / "dup.csv")) == 2
    (tmp_path / "ok.csv").write_text(header + f"{serial},{pin},20,430000,2099-01-01\n", encoding="utf-8")
    assert await cli(database_url, "mpay", "cards", "import", str(tmp_path / "ok.csv")) == 0
    assert await conn.fetchval("SELECT face_cents FROM mpay_prepaid_cards WHERE serial = $1", serial) == 2000
    assert await cli(database_url, "mpay", "cards", "import", str(tmp_path / "ok.csv")) == 2  # already stored
    stored = await conn.fetchval("SELECT pin_mac FROM mpay_prepaid_cards WHERE serial = $1", serial)
    assert pin.encode() not in bytes(stored)


async def test_the_demo_data_is_seeded_idempotently(conn: asyncpg.Connection, test_keys: Any,
                                                    tmp_path: Path) -> None:
    for _ in range(2):
        await mpay_demo.seed(conn, test_keys[0], tmp_path)
    sub = await registry.get(conn, "13800138002")
    assert sub is not None and not sub.eligible
    assert await conn.fetchval("SELECT count(*) FROM mpay_merchants WHERE id IN ('DEMODIG', 'DEMOGEN')") == 2
    assert await conn.fetchval("SELECT count(*) FROM mpay_prepaid_cards WHERE serial LIKE '4_00018%'") >= 10
