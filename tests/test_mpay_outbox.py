"""Outbound SMS (SPEC 6.8): the outbox commits with its change, is delivered to Kannel's
sendsms by the dispatcher with retries, erases sensitive texts, records DLRs, and survives
a kill -9 of the server between commit and delivery."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest

from recharge.keys import MasterKeys, write_keys
from recharge.mpay import dispatcher
from tests.conftest import ROOT
from tests.mpay_world import MpayWorld
from tests.smsc_standin import StandInSmsc, running_smsc


@pytest.fixture
async def smsc() -> AsyncIterator[StandInSmsc]:
    async with running_smsc() as s:
        yield s


async def _due(pool: asyncpg.Pool, msisdn: str) -> None:
    """This number's messages due now; the rest of the run's (never delivered: no Kannel) later."""
    async with pool.acquire() as conn:
        await conn.execute("UPDATE mpay_outbox SET next_at = CASE WHEN msisdn = $1 THEN now()"
                           " ELSE now() + interval '1 hour' END WHERE state = 'pending'", msisdn)


async def _rows(pool: asyncpg.Pool, msisdn: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT * FROM mpay_outbox WHERE msisdn = $1 ORDER BY created_at", msisdn)


async def test_delivery_retries_then_sends_and_erases_the_sensitive_text(w: MpayWorld, smsc: StandInSmsc) -> None:
    msisdn, _ = await w.opened()
    env = dataclasses.replace(w.env, settings=w.env.settings.replace(
        mpay_outbox_url=smsc.url, mpay_outbox_username="u", mpay_outbox_password="p"))
    smsc.status, smsc.answer = 503, "service unavailable"
    await _due(w.pool, msisdn)
    async with aiohttp.ClientSession() as session:
        await dispatcher.deliver_once(w.pool, env, session)
        row = (await _rows(w.pool, msisdn))[0]
        assert (row["state"], row["attempts"], row["sensitive"]) == ("pending", 1, True)
        assert row["text"] is None and row["text_enc"] is not None  # stored encrypted only
        assert 4 <= (row["next_at"] - row["created_at"]).total_seconds() <= 60  # 5 s later
        smsc.status, smsc.answer = 200, "garbage"
        await _due(w.pool, msisdn)
        await dispatcher.deliver_once(w.pool, env, session)
        assert (await _rows(w.pool, msisdn))[0]["attempts"] == 2
        smsc.status, smsc.answer = 202, "3: Queued for later delivery"
        await _due(w.pool, msisdn)
        await dispatcher.deliver_once(w.pool, env, session)
    row = (await _rows(w.pool, msisdn))[0]
    assert (row["state"], row["text_enc"]) == ("sent", None)
    sent = smsc.to(msisdn)[-1]
    assert sent.text.startswith("手机支付登录密码")
    h = sent.headers
    assert (h["X-Kannel-From"], h["X-Kannel-Coding"], h["X-Kannel-DLR-Mask"]) == ("10658888", "2", "3")
    assert (h["X-Kannel-Username"], h["X-Kannel-Password"]) == ("u", "p")
    assert f"id={row['id']}&status=%d" in h["X-Kannel-DLR-Url"]
    dlr = h["X-Kannel-DLR-Url"].replace("%d", "1").replace("http://127.0.0.1:8080", w.base)
    async with w.session.get(dlr) as resp:
        assert (await resp.json())["code"] == "0000"
    assert (await _rows(w.pool, msisdn))[0]["dlr_status"] == 1
    assert len(smsc.to(msisdn)) == 3  # a DLR never causes a resend


async def test_a_message_not_accepted_within_a_day_fails(w: MpayWorld, smsc: StandInSmsc) -> None:
    msisdn, _ = await w.opened()
    env = dataclasses.replace(w.env, settings=w.env.settings.replace(mpay_outbox_url=smsc.url))
    smsc.status = 500
    async with w.pool.acquire() as conn:
        await conn.execute("UPDATE mpay_outbox SET created_at = now() - interval '25 hours' WHERE msisdn = $1", msisdn)
    await _due(w.pool, msisdn)
    async with aiohttp.ClientSession() as session:
        await dispatcher.deliver_once(w.pool, env, session)
    row = (await _rows(w.pool, msisdn))[0]
    assert (row["state"], row["text_enc"]) == ("failed", None)


def _serve(database_url: str, data_dir: Path, smsc_url: str, *extra: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--dd-port", "0", "--http-port", "0",
         "--database-url", database_url, "--data-dir", str(data_dir), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RECHARGE_DD_HOST": "127.0.0.1", "RECHARGE_HTTP_HOST": "127.0.0.1",
             "RECHARGE_SMS_SHARED_SECRET": "s", "RECHARGE_MPAY_OUTBOX_URL": smsc_url,
             "RECHARGE_MPAY_OUTBOX_INTERVAL_S": "0.1", "RECHARGE_MPAY_OUTBOX_FIRST_RETRY_S": "0.2"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return proc, int(line.split("http_port=")[1].split()[0])
        if not line:
            break
    proc.kill()
    raise AssertionError("serve did not become ready")


async def test_the_outbox_survives_a_kill_9_between_commit_and_delivery(
        empty_database: str, tmp_path: Path, smsc: StandInSmsc) -> None:
    write_keys(tmp_path / "keys.json", MasterKeys.generate(demo=True))
    smsc.status = 503  # the SMSC is down: nothing can be delivered before the kill
    proc, port = await asyncio.to_thread(_serve, empty_database, tmp_path, smsc.url)
    try:
        conn = await asyncpg.connect(empty_database)  # a subscriber as the BOSS feed would write it
        try:
            await conn.execute("INSERT INTO mpay_subscribers (msisdn, name, id_type, id_number, province, status)"
                               " VALUES ('13800138000', '张三', 'id_card', 'X1', '430000', 'normal')")
        finally:
            await conn.close()
        query = urlencode({"secret": "s", "from": "13800138000", "to": "10658888", "text": "KT A"})
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{port}/sms/inbound?{query}") as resp:
            assert (await resp.text()).startswith("手机支付开户成功")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT state FROM mpay_outbox WHERE msisdn = '13800138000'") == "pending"
    finally:
        await conn.close()
    smsc.status = 202
    proc, _ = await asyncio.to_thread(_serve, empty_database, tmp_path, smsc.url)
    try:
        deadline = time.monotonic() + 20
        while not any(s.text.startswith("手机支付登录密码") for s in smsc.to("13800138000")):
            assert time.monotonic() < deadline, smsc.received
            await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)


async def test_upkeep_purges_replies_and_attempts_past_their_windows(w: MpayWorld) -> None:
    msisdn, _ = await w.opened()
    await w.sms(msisdn, "CX", message_id="old-one")
    await w.sms(msisdn, "CX", message_id="new-one")
    async with w.pool.acquire() as conn:
        await conn.execute("UPDATE mpay_mo_replies SET created_at = now() - interval '8 days'"
                           " WHERE msisdn = $1 AND message_id = 'old-one'", msisdn)
    await dispatcher.upkeep(w.pool, w.env)
    async with w.pool.acquire() as conn:
        kept = await conn.fetch("SELECT message_id FROM mpay_mo_replies WHERE msisdn = $1", msisdn)
    assert [r["message_id"] for r in kept] == ["new-one"]
