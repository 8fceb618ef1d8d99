"""``rechargectl envelope`` with seed 004's worked examples (request and reply), ``rechargectl
platform add`` and ``rechargectl settle`` against a real database."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app import cli, fixtures
from recharge.orders import lifecycle as orders
from recharge.orders import model
from recharge.orders import platforms as order_platforms

ROOT = Path(__file__).resolve().parent.parent

SEED_REQUEST_PLAINTEXT = '{"platform":1, "userinfo": "{\\"openid\\":\\"1234567890\\"}", "type":1}'
# As printed in the seed (line breaks removed): two hex digits were garbled in transcription.
SEED_REQUEST_DATA_PRINTED = (
    "C99486C1AA1897DE48650DC10C2BECB796D3F43CA80F884DE22023F22E0C359398EA8F3C3A8D3965024F8FFE9F4E4F17"
    "AACBF9F799F113279B4BEDEA9B3541D1A0E156475F7E2DC"
)
SEED_REPLY_TIMESTAMP = 1433296168984
SEED_REPLY_PLAINTEXT = (
    '{"pki":"70000472","serial":"0000000000003309","key":"00000000","toreader":["010700a4000002ddf190000200",'
    '"0205c4fe00000090000300","030500b095080890000000","040700a4000002adf16a810400","050700a4000002adf390000500"]}'
)
# As printed (the stray space removed): one hex digit was lost.
SEED_REPLY_DATA_PRINTED = (
    "1452106a861ae1c0ba56f4865b13aa9b0002fcbc4a093bb9ba3930be69f72290aa5564acea2278c37c02e67de748999ff2c2068a"
    "6fe666fa143ec3309471496a259411a60393298d7335a4f2c08f3ff4eaefcf88de4bf7482e3f13083638d77b8d34afef2b97a789"
    "2919631aab015c13e2bdfd5158399ffe050d5c84111d7f8b5fa46d09d08aeae99c1d10f3876b773c1f9a47bfd351154627bd6a76"
    "23d22641fa9da8342518fe378788a383e1acab6bb45d27376797f7ce810140b840c73a5702f2874ad1710bc076c246baf071faaf"
    "0cd76d09518819e"
)


def run_cli(argv: list[str], stdin: bytes, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_envelope_encode_reproduces_the_seed_request_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, _ = run_cli(["envelope", "encode", "--timestamp", "1428042275"],
                             SEED_REQUEST_PLAINTEXT.encode(), capsys, monkeypatch)
    assert status == 0
    envelope = json.loads(out)
    assert list(envelope) == ["timestamp", "data", "mac"] and envelope["timestamp"] == 1428042275
    assert envelope["mac"] == "D99C278A"  # the seed's mac, over the full ciphertext
    data = envelope["data"]
    assert len(data) == 144
    # The seed as printed: the 'F' at offset 88 dropped, the 'E' at offset 102 printed as '9'.
    assert (data[88], data[102]) == ("F", "E")
    assert data[:88] + data[89:102] + "9" + data[103:] == SEED_REQUEST_DATA_PRINTED


def test_envelope_encode_reproduces_the_seed_reply_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["envelope", "encode", "--timestamp", str(SEED_REPLY_TIMESTAMP), "--clear",
            '{"status":1,"errmsg":""}', "--lowercase"]
    status, out, _ = run_cli(argv, SEED_REPLY_PLAINTEXT.encode(), capsys, monkeypatch)
    assert status == 0
    envelope = json.loads(out)
    assert list(envelope) == ["timestamp", "status", "errmsg", "data", "mac"]
    assert envelope["mac"] == "5E1A42E3"  # the seed's reply mac
    data = envelope["data"]
    assert data[297] == "f" and data[:297] + data[298:] == SEED_REPLY_DATA_PRINTED  # one 'f' lost


def test_envelope_decode_opens_the_reconstructed_seed_reply(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["envelope", "encode", "--timestamp", str(SEED_REPLY_TIMESTAMP), "--clear",
            '{"status":1,"errmsg":""}', "--lowercase"]
    _, out, _ = run_cli(argv, SEED_REPLY_PLAINTEXT.encode(), capsys, monkeypatch)
    status, plain, _ = run_cli(["envelope", "decode"], out.encode(), capsys, monkeypatch)
    assert status == 0 and plain == SEED_REPLY_PLAINTEXT


def test_envelope_decode_refuses_the_seed_reply_as_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    printed = {"timestamp": SEED_REPLY_TIMESTAMP, "status": 1, "errmsg": "", "data": SEED_REPLY_DATA_PRINTED,
               "mac": "5E1A42E3"}
    status, out, err = run_cli(["envelope", "decode"], json.dumps(printed).encode(), capsys, monkeypatch)
    assert status == 1 and out == "" and "whole 3DES blocks" in err


def test_envelope_decode_with_wrong_mac_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out, _ = run_cli(["envelope", "encode", "--timestamp", "1428042275"],
                        SEED_REQUEST_PLAINTEXT.encode(), capsys, monkeypatch)
    envelope = json.loads(out)
    envelope["mac"] = "D99C278B"
    status, plain, err = run_cli(["envelope", "decode"], json.dumps(envelope).encode(), capsys, monkeypatch)
    assert status == 1 and plain == "" and "mac does not match" in err


def test_envelope_encode_encrypts_stdin_exactly_as_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '{"a": 1,\n "b":"中文"}\n'
    _, out, _ = run_cli(["envelope", "encode", "--timestamp", "1700000000"], text.encode(), capsys, monkeypatch)
    _, without, _ = run_cli(["envelope", "encode", "--timestamp", "1700000000"], text.rstrip("\n").encode(),
                            capsys, monkeypatch)
    assert json.loads(out)["data"] != json.loads(without)["data"]
    status, plain, _ = run_cli(["envelope", "decode"], out.encode(), capsys, monkeypatch)
    assert status == 0 and plain == text


def test_envelope_decode_of_non_json_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, err = run_cli(["envelope", "decode"], b"timestamp=1", capsys, monkeypatch)
    assert status == 1 and "not a JSON envelope" in err


# --- database commands, run as a separate process like an operator would


async def rechargectl(*args: str, database_url: str, data_dir: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECHARGE_")}
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "rechargectl"), *args, "--database-url", database_url,
        "--data-dir", str(data_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_platform_add_generates_a_key_pair_and_registers_the_public_key(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    raw = "8" + fixtures.random_digits(8)
    code = await fixtures.fresh_merchant_code(conn)
    key_path = tmp_path / "client" / "private.pem"
    args = ["platform", "add", "--raw", raw, "--name", "public bicycle", "--merchant", code, "--pki", "70000472",
            "--generate-key", str(key_path)]
    status, out, err = await rechargectl(*args, database_url=database_url, data_dir=tmp_path)
    assert status == 0, err
    assert "PRIVATE" not in out and "private key written to" in out
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    platform = await order_platforms.get_platform(conn, raw)
    assert platform is not None and platform.pki_no == "70000472" and platform.name == "public bicycle"
    stored = await order_platforms.get_public_key_pem(conn, platform.id, "1")
    assert stored == order_platforms.public_key_of_private_file(key_path)
    assert "PRIVATE" not in (stored or "")
    again, _, err = await rechargectl(*args, database_url=database_url, data_dir=tmp_path)
    assert again == 2 and "not overwriting" in err
    public = tmp_path / "public.pem"
    public.write_text(stored or "")
    same, out, _ = await rechargectl(*args[:-2], "--public-key", str(public), database_url=database_url,
                                     data_dir=tmp_path)
    assert same == 0 and "already registered" in out


async def test_platform_add_refuses_a_private_key_as_public_key(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    order_platforms.generate_key_pair(tmp_path / "private.pem")
    raw = "8" + fixtures.random_digits(8)
    status, _, err = await rechargectl(
        "platform", "add", "--raw", raw, "--name", "x", "--merchant", await fixtures.fresh_merchant_code(conn),
        "--public-key", str(tmp_path / "private.pem"), database_url=database_url, data_dir=tmp_path,
    )
    assert status == 2 and "private key" in err
    assert await order_platforms.get_platform(conn, raw) is None


async def test_platform_add_refuses_another_key_under_the_same_crt_version(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    raw, code = "8" + fixtures.random_digits(8), await fixtures.fresh_merchant_code(conn)
    base = ["platform", "add", "--raw", raw, "--name", "x", "--merchant", code]
    assert (await rechargectl(*base, "--generate-key", str(tmp_path / "a.pem"),
                              database_url=database_url, data_dir=tmp_path))[0] == 0
    status, _, err = await rechargectl(*base, "--generate-key", str(tmp_path / "b.pem"),
                                       database_url=database_url, data_dir=tmp_path)
    assert status == 2 and "already has another key" in err
    assert not (tmp_path / "b.pem").exists()  # its public half was not registered: not kept


async def loaded_order(conn: asyncpg.Connection, platform_id: int, merchant_id: int, serial_no: str,
                       amount: int) -> model.Order:
    order = (await orders.create_order(
        conn, merchant_id=merchant_id, amount_cents=amount, card_no="1680" + fixtures.random_digits(12),
        platform_id=platform_id, biz_serial_no=serial_no, request_digest="d",
    )).order
    model.single(await orders.mark_loading(conn, [orders.Loading(order.order_no, terminal_code="11552001")]))
    return model.single(await orders.mark_loaded(conn, [orders.Loaded(order.order_no, balance_after_cents=amount)]))


async def test_settle_writes_one_csv_per_platform_and_running_twice_changes_nothing(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path, audited: None
) -> None:
    code = await fixtures.fresh_merchant_code(conn)
    merchant_id = await fixtures.funded_merchant(conn, code, 100_000)
    raws = ["6" + fixtures.random_digits(8) for _ in range(2)]
    made: dict[str, list[Any]] = {}
    for raw in raws:
        platform = await order_platforms.register_platform(conn, platform_raw=raw, name=raw, merchant_code=code)
        loaded = await loaded_order(conn, platform.id, merchant_id, f"{raw}-1", 111)
        confirmed = model.single(await orders.confirm_orders(
            conn, [(await loaded_order(conn, platform.id, merchant_id, f"{raw}-2", 222)).order_no]))
        loading = (await orders.create_order(
            conn, merchant_id=merchant_id, amount_cents=333, card_no="1680" + fixtures.random_digits(12),
            platform_id=platform.id, biz_serial_no=f"{raw}-3", request_digest="d")).order
        model.single(await orders.mark_loading(conn, [orders.Loading(loading.order_no)]))
        made[raw] = [loaded, confirmed, loading]
    day = model.local_date(dt.datetime.now(dt.UTC)).isoformat()
    status, out, err = await rechargectl("settle", "--date", day, database_url=database_url, data_dir=tmp_path)
    assert status == 0, err
    files = {}
    for raw in raws:
        path = tmp_path / "settlement" / f"{day.replace('-', '')}_{raw}.csv"
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        loaded, confirmed, loading = made[raw]
        settled = [r for r in rows if r["section"] == "settled"]
        assert {r["order_no"] for r in settled} == {loaded.order_no, confirmed.order_no}
        assert {r["biz_serial_no"] for r in settled} == {f"{raw}-1", f"{raw}-2"}
        assert all(r["state"] == "05" for r in settled)
        assert [(r["order_no"], r["state"]) for r in rows if r["section"] == "loading"] == [(loading.order_no, "02")]
        by_no = {r["order_no"]: r for r in rows}
        assert by_no[loaded.order_no]["amount_cents"] == "111" and by_no[loaded.order_no]["card_no"] == loaded.card_no
        files[path] = (path.read_bytes(), path.stat().st_mtime_ns)
        for o in (loaded, confirmed):
            now = await model.get_order(conn, o.order_no)
            assert now is not None and now.state == model.SETTLED
    settled_at = await conn.fetchval("SELECT max(settled_at) FROM orders WHERE merchant_id = $1", merchant_id)
    status, _, err = await rechargectl("settle", "--date", day, database_url=database_url, data_dir=tmp_path)
    assert status == 0, err
    for path, (content, mtime) in files.items():
        assert path.read_bytes() == content and path.stat().st_mtime_ns == mtime
    assert await conn.fetchval("SELECT max(settled_at) FROM orders WHERE merchant_id = $1", merchant_id) == settled_at
