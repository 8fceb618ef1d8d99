"""The SIM wallet room (recharge/wallet): wallet keys in the key file, request shapes, sequence numbers and
the clearing of uploaded purchase batches, against real PostgreSQL, the virtual SIM and POS as counterpart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from app import demo
from core_ext.virtual_pos import SHANGHAI, VirtualPOS
from core_ext.virtual_sim import STATE_OPEN, VirtualRfidSim, WalletMasterKeys
from recharge.config import Settings
from recharge.keys import KeyFileError, MasterKeys, WalletKeys, load_keys, write_keys
from recharge.ledger import transfers
from recharge.mpay.env import Env
from recharge.wallet import cards, clearing, sequence, terminals, wire
from recharge.wallet.clearing import Posting
from recharge.wallet.crypto import WalletCrypto, body_mac, body_mac_ok
from recharge.wallet.terminals import Terminal
from tests.conftest import unique_digits
from tests.wallet_world import account_with_sim

WALLET_KEYS = WalletKeys.generate()
VKEYS = WalletMasterKeys(**{n: getattr(WALLET_KEYS, n) for n in ("load", "purchase", "tac", "maint", "stk", "pos")})
CRYPTO = WalletCrypto(WALLET_KEYS)
WHEN = datetime(2026, 1, 5, 10, 0, 0, tzinfo=SHANGHAI)


# --- keys ------------------------------------------------------------------------------------------------


def test_wallet_keys_round_trip_all_or_none_and_demo_files_get_them(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    keys = MasterKeys.generate(demo=True)
    path = tmp_path / "keys.json"
    write_keys(path, keys)
    assert load_keys(path) == keys and keys.wallet is not None
    assert "mkw_" not in repr(keys) and keys.wallet.stk.hex() not in repr(keys.wallet)
    data = json.loads(path.read_text())
    for name in ("purchase", "tac", "maint", "stk", "pos", "load"):
        data.pop(f"mkw_{name}")
    path.write_text(json.dumps(data))
    assert load_keys(path).wallet is None
    assert load_keys(path, create_demo=True).wallet is not None, "a demo key file gets wallet keys"
    assert load_keys(path).wallet is not None
    monkeypatch.setenv("RECHARGE_MKW_STK", "00" * 16)
    assert load_keys(path).wallet.stk == bytes(16)  # type: ignore[union-attr]
    data["demo_only"] = False
    data["mkw_stk"] = "11" * 16
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match="purchase") as error:
        load_keys(path)
    assert "11" * 16 not in str(error.value)


# --- wire and MACs -----------------------------------------------------------------------------------------


def a_record(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"card": "1" * 16, "offline_serial": 3, "amount": 100, "balance_after": 0,
                               "tts": "0000000A", "date": "20260105", "time": "235959", "tac": "a1b2c3d4",
                               "void": False}
    return {**base, **changes}


def test_records_are_checked_field_by_field() -> None:
    record = wire.record(a_record())
    assert (record.tts, record.tac, record.void) == (10, bytes.fromhex("A1B2C3D4"), False)
    for bad in (a_record(amount=0), a_record(amount=1.5), a_record(amount="100"), a_record(amount=True),
                a_record(card="1" * 15), a_record(offline_serial=65536), a_record(tts="0A"),
                a_record(date="20260230"), a_record(time="240000"), a_record(tac="zz000000"),
                a_record(void=0), a_record(extra=1), {k: v for k, v in a_record().items() if k != "tac"}, []):
        with pytest.raises(wire.WireError):
            wire.record(bad)


def test_pos_requests_by_route() -> None:
    head = {"terminal_id": "000011552001", "pos_seq": 1}
    assert wire.pos_request("loads", {**head, "card": "1" * 16})["card"] == "1" * 16
    assert wire.pos_request("continue", {**head, "replies": "0102900000"})["replies"] == bytes.fromhex("0102900000")
    for route, body in (("loads", {**head}), ("returns", {**head, "card": "1" * 16, "amount": 1}),
                        ("batches", {**head, "batch_no": "b 1", "records": []}),
                        ("batches", {**head, "batch_no": "1", "records": [{}] * 1001}),
                        ("recover", {**head, "pos_seq": 0}), ("recover", {**head, "pos_seq": 2**31})):
        with pytest.raises(wire.WireError):
            wire.pos_request(route, body)
    assert wire.pos_terminal(head) == "000011552001" and wire.pos_terminal({"terminal_id": 5}) is None
    with pytest.raises(wire.WireError):
        wire.parse_json(b"\xff")


def test_body_macs_and_the_state_write_script_match_the_virtual_devices() -> None:
    sim = VirtualRfidSim("7310000000000017", VKEYS, balance=0)
    body = b'{"card_no":"7310000000000017"}'
    k_stk = CRYPTO.stk_key(sim.card_no)
    assert k_stk == sim.k_stk
    assert body_mac_ok(k_stk, body, body_mac(k_stk, body).lower())
    assert not body_mac_ok(k_stk, body, "0000000G") and not body_mac_ok(k_stk, body, None)
    assert not body_mac_ok(k_stk, body + b" ", body_mac(k_stk, body))
    assert CRYPTO.pos_key("000011552001") == VirtualPOS("11552001", VKEYS.purchase, VKEYS.pos).k_pos
    for apdu in ("00A4000002DDF1", "00A4000002ADF1"):
        sim.transmit(bytes.fromhex(apdu))
    challenge = sim.transmit(bytes.fromhex("0084000004"))[:4]
    replies = sim.run_script(bytes.fromhex(CRYPTO.state_write_script(sim.card_no, challenge, STATE_OPEN, 30_000)))
    assert replies.endswith(b"\x90\x00") and (sim.state, sim.limit) == (STATE_OPEN, 30_000)


def test_commission_is_half_up_to_the_fen() -> None:
    assert [clearing.commission(a, 60) for a in (1, 83, 84, 250, 1234, 10_000)] == [0, 0, 1, 2, 7, 60]
    assert clearing.commission(1000, 0) == 0 and clearing.commission(1000, 10_000) == 1000


# --- sequence numbers ---------------------------------------------------------------------------------------


async def test_seq_rules_new_repeat_lower_and_other_body(conn: asyncpg.Connection) -> None:
    sender = "stk:" + unique_digits(16)
    async with conn.transaction():
        assert (await sequence.claim(conn, sender, 5, {"a": 1})).verdict == "new"
        await sequence.store(conn, sender, 5, {"a": 1}, b"reply-5")
    async with conn.transaction():
        again = await sequence.claim(conn, sender, 5, {"a": 1.0})
        assert (again.verdict, again.reply) == ("repeat", b"reply-5")
        assert (await sequence.claim(conn, sender, 5, {"a": 2})).verdict == "refused"
        assert (await sequence.claim(conn, sender, 4, {"a": 1})).verdict == "refused"
        assert (await sequence.claim(conn, sender, 9, {"a": 1})).verdict == "new", "gaps are allowed"
    async with conn.transaction():
        assert (await sequence.claim(conn, sender, 6, {})).verdict == "new", "an unstored claim consumed nothing"


def _mac(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(b"test-key" + data).digest()


def test_kept_bodies_hold_no_secret_and_still_tell_a_repeat() -> None:
    pin, op = "18" + unique_digits(16), "4321"
    body = {"card_no": "7310" + unique_digits(12), "seq": 3, "op": "account.card_recharge", "params": {"pin": pin},
            "op_password": op}
    kept = sequence.without_secrets(body, _mac)
    assert pin not in json.dumps(kept) and op not in json.dumps(kept) and kept["seq"] == 3
    assert kept == sequence.without_secrets(json.loads(json.dumps(body, indent=2)), _mac), "a repeat is equal"
    assert kept != sequence.without_secrets({**body, "params": {"pin": "18" + unique_digits(16)}}, _mac)
    changed = {**body, "params": {"old": "111111", "new": "222222", "pay_password": "333333"}}
    assert not {"111111", "222222", "333333"} & set(json.dumps(sequence.without_secrets(changed, _mac)).split('"'))


async def test_migration_0503_redacts_the_secrets_kept_before(conn: asyncpg.Connection) -> None:
    sender, pin = "stk:" + unique_digits(16), "18" + unique_digits(16)
    clear = {"seq": 1, "op": "hf.other", "op_password": "9876", "params": {"pin": pin, "pay_password": "135790",
                                                                          "old": "246802", "new": "864201"}}
    sql = (Path(__file__).parent.parent / "recharge" / "migrations" / "0503_wallet_seq_secrets.sql").read_text()
    async with conn.transaction():
        await sequence.store(conn, sender, 1, clear, b"reply")
        await conn.execute(sql)
        kept = await conn.fetchval("SELECT body::text FROM wallet_seq_replies WHERE sender = $1", sender)
        await conn.execute("DELETE FROM wallet_seq_replies WHERE sender = $1", sender)
    assert json.loads(kept) == {"seq": 1, "op": "hf.other", "op_password": "redacted", "params": {
        "pin": "redacted", "pay_password": "redacted", "old": "redacted", "new": "redacted"}}


# --- clearing ----------------------------------------------------------------------------------------------------


class RecordingBooks:
    """Stands in for the mobile payment ledger (SPEC 6.2 names) in these unit tests: real transfers between
    test accounts named after ``tag``, and a record of what was posted."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.postings: list[Posting] = []

    async def _account(self, conn: asyncpg.Connection, name: str) -> int:
        return await transfers.ensure_account(conn, ledger="CNY", kind=transfers.AccountKind.EXTERNAL,
                                              card_no=f"test:{self.tag}:{name}", no_overdraft=False)

    async def post(self, conn: asyncpg.Connection, postings: Sequence[Posting]) -> list[bool]:
        moves = [
            transfers.NewTransfer(p.id, await self._account(conn, p.debit), await self._account(conn, p.credit),
                                  p.amount, code=p.code)
            for p in postings
        ]
        done = [outcome.ok for outcome in await transfers.create_transfers(conn, moves)]
        self.postings.extend(postings)
        return done


async def test_a_batch_clears_record_by_record(conn: asyncpg.Connection, settings: Settings,
                                               test_keys: tuple[MasterKeys, Path]) -> None:
    terminal_id = unique_digits(12)
    assert await terminals.register(conn, [Terminal(terminal_id, merchant="DEMODIG")]) == ["created"]
    pos = VirtualPOS(terminal_id, VKEYS.purchase, VKEYS.pos)
    master = dataclasses.replace(test_keys[0], wallet=WALLET_KEYS)
    env = Env.of(settings, master)
    sim, acct = await account_with_sim(conn, settings, master, limit=100_000, balance=100_000)
    sale = pos.purchase(sim, 1234, WHEN)
    voided = pos.void(pos.purchase(sim, 500, WHEN))
    forged = dataclasses.replace(pos.purchase(sim, 300, WHEN), tac=bytes(4))
    stranger = VirtualRfidSim("7310" + unique_digits(12), VKEYS, balance=1000, state=STATE_OPEN)
    unknown = pos.purchase(stranger, 100, WHEN)
    records: list[object] = [sale.wire(), voided.wire(), forged.wire(), unknown.wire(), sale.wire(),
                             {**sale.wire(), "offline_serial": 99}, {"card": "x"}, voided.wire() | {"void": False}]
    books = RecordingBooks(terminal_id)
    async with conn.transaction():
        results = await clearing.upload_batch(conn, env, CRYPTO, books, terminal_id=terminal_id, merchant="DEMODIG",
                                              batch_no="000001", records=records)
    assert [r.code for r in results] == ["0000", "0000", "5008", "5007", "5011", "5011", "1001", "5011"]
    assert [r.commission for r in results][:2] == [7, 0]
    assert [(p.debit, p.credit, p.amount) for p in books.postings] == [
        (f"W/{acct}", "MER/DEMODIG", 1234), (f"W/{acct}", f"C/{acct}", 500), ("MER/DEMODIG", "FEE", 7)]
    again = await clearing.previous_batch(conn, terminal_id, "000001")
    assert again == {"batch_no": "000001", "results": [r.wire() for r in results]}
    async with conn.transaction():
        late_void = await clearing.upload_batch(conn, env, CRYPTO, books, terminal_id=terminal_id, merchant="DEMODIG",
                                                batch_no="000002", records=[sale.wire() | {"void": True}])
    assert [r.code for r in late_void] == ["5009"], "a void of an uploaded purchase is a return's job"


async def test_terminals_register_idempotently_and_rates_are_checked(conn: asyncpg.Connection) -> None:
    tid = unique_digits(12)
    results = await terminals.register(conn, [Terminal(tid, hall="HN0001"), Terminal(tid, hall="HN0001"),
                                              Terminal(tid, merchant="DEMOGEN"), Terminal("12", hall="H"),
                                              Terminal(unique_digits(12), merchant="x", hall="H")])
    assert results == ["created", "exists", "exists_with_different_fields", "invalid", "invalid"]
    assert await terminals.find(conn, tid) == Terminal(tid, hall="HN0001")
    merchant = "R" + unique_digits(6)
    assert await terminals.set_rates(conn, [(merchant, 45), ("bad", 1), (merchant, 10_001)]) == [
        "created", "invalid", "invalid"]
    assert await clearing.merchant_rate(conn, merchant) == 45
    assert await clearing.merchant_rate(conn, "NOSUCH1") == clearing.DEFAULT_COMMISSION_BP


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url or ""}
    return subprocess.run([sys.executable, "-m", "app.cli", "wallet", *args, "--data-dir", str(settings.data_dir),
                           "--actor", "tester"], capture_output=True, text=True, env=env, timeout=120)


async def test_operator_commands_register_terminals_rates_and_stock(settings: Settings, pool: asyncpg.Pool) -> None:
    tid, card = unique_digits(12), "7310" + unique_digits(12)
    merchant = "C" + unique_digits(6)
    for args, expected in ((("terminal", tid, "--merchant", merchant), "created"),
                           (("terminal", tid, "--merchant", merchant), "exists"),
                           (("rate", merchant, "45"), "0.45 %"), (("stock", card), "created"),
                           (("bind", "13912345678", card, "--reason", "swap"), "created")):
        done = await asyncio.to_thread(_cli, settings, *args)
        assert done.returncode == 0 and expected in done.stdout, (args, done.stderr)
    for args in (("terminal", tid, "--hall", "HN0001"), ("rate", merchant, "10001"), ("stock", "123")):
        assert (await asyncio.to_thread(_cli, settings, *args)).returncode == 2, args
    async with pool.acquire() as conn:
        assert await terminals.find(conn, tid) == Terminal(tid, merchant=merchant)
        assert await clearing.merchant_rate(conn, merchant) == 45
        assert await cards.status(conn, card) == "bound" and await cards.status(conn, "0" * 16) is None
        actions = await conn.fetch("SELECT action FROM operator_actions WHERE actor = 'tester' AND"
                                   " (subject IN ($1, $2, $3) OR detail::text LIKE $4)", tid, merchant, card, f"%{card}%")
        assert sorted(r["action"] for r in actions) == ["wallet.bind", "wallet.rate", "wallet.stock", "wallet.terminal"]


async def test_demo_seeds_the_wallet_terminals_and_stock_sims_and_spec_keys(
        pool: asyncpg.Pool, test_keys: tuple[MasterKeys, Path], tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        await demo.seed(conn, test_keys[0])
        await demo.seed(conn, test_keys[0])
        assert await terminals.find(conn, "000000000099") == Terminal("000000000099", hall="HN0001")
        assert await terminals.find(conn, "000011552001") == Terminal("000011552001", merchant="DEMODIG")
        assert await cards.status(conn, "1000581000000125") in ("stock", "bound", "retired")
    fresh = load_keys(tmp_path / "demo-keys.json", create_demo=True)
    assert fresh.wallet == WalletKeys.demo()
    assert fresh.wallet.purchase.hex().upper() == "11223344556677888877665544332211"
