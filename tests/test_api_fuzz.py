"""HTTP hostile input, bounded: schemathesis against every operation of ``GET /openapi.json`` on a
live ``rechargectl serve`` (chaos/api_fuzz.py), with every check it offers and the platform's own.

The server runs as an operator runs it, on a database of its own on the tests' PostgreSQL
server. Two passes of two cases per operation and generation mode: signed (valid credentials
on every case, so the cases reach the handlers; a refused one changes no money table) and
unsigned (every operation that needs credentials refuses, as documented; the books the same
after the pass). Every STK and POS operation (the device's ``X-MAC``) and the bank notice (the
gateway's signature) must get answers past its signature check in the signed pass. ``make chaos``
runs the long version (chaos/run.py, docs/RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from pathlib import Path

import pytest

from chaos import api_fuzz
from http_api import wallet_api
from recharge import db

# What STK, POS and bank-notice requests are refused with before their operation: malformed (1001), a wrong
# X-MAC or sequence number (1002), a bad signature (FAIL), a delivery report's wrong secret (1002): a signed
# case must get other answers too.
WALLET_DOOR = frozenset({"200 1001", "400 1001", "413 1001", "200 1002"})
SIGNATURE_CHECKED = {**{f"POST /mpay/v1{path}": WALLET_DOOR for path in wallet_api.openapi_paths()},
                     "POST /mpay/v1/bank/notify/{gw}": frozenset({"403 FAIL"}),
                     "GET /mpay/v1/sms/dlr": frozenset({"403 1002"})}  # its secret is a query field


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_5xx_no_mismatch_and_no_change_on_a_refusal(server_url: str, tmp_path: Path) -> None:
    name = f"recharge_fuzz_{secrets.token_hex(4)}"
    asyncio.run(db.execute_once(server_url, f'CREATE DATABASE "{name}"'))
    seed = random.SystemRandom().randrange(2**31)
    try:
        result = api_fuzz.fuzz(tmp_path, database_url=db.with_database(server_url, name), examples=2, seed=seed)
    finally:
        asyncio.run(db.execute_once(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    logs = {p: Path(r["log"]).read_text()[-3000:] for p, r in result["passes"].items()}
    assert result["ok"], f"seed {seed}: {json.dumps(result, indent=1)[:4000]}\n{logs}"
    signed, unsigned = result["passes"]["signed"], result["passes"]["unsigned"]
    for one in (signed, unsigned):
        assert one["operations"] == result["operations"], "every operation of the document fuzzed"
        assert one["cases"] >= one["operations"], one  # two a mode each, less the few it cannot generate
    assert signed["refused"] < signed["cases"], "with credentials some cases must get through"
    for label, door in SIGNATURE_CHECKED.items():  # the device's X-MAC, the bank's signature: past the door
        answers = signed["answers"].get(label, {})
        assert set(answers) - door, f"seed {seed}: {label} never got past its signature check: {answers}"
    assert signed["books_checked"] > 0 and unsigned["books_checked"] > 0
    assert result["unsigned_books_unchanged"] and result["cases"] >= 300, result["cases"]
