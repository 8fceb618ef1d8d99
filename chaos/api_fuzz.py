"""HTTP hostile input at scale: schemathesis against every JSON and form endpoint of a live platform.

``fuzz()`` starts ``rechargectl serve`` as an operator does (chaos.server.Served: the embedded
PostgreSQL in its data folder, or a database of its own), provisions credentials of its own —
a card-service merchant with a LICENSEKEY, an order-API platform with its RSA key pair, a
mobile payment customer, an operator of each role, a partner merchant with its key, an RFID-SIM
bound to the customer with its wallet opened, a merchant and a hall POS, each bank gateway's key
pair (chaos/api_fuzz_devices.py) — fetches
``GET /openapi.json`` and runs the schemathesis CLI twice with every check it offers, plus
the platform's own (chaos/api_fuzz_hooks.py):

- **signed**: every case carries valid credentials, so it reaches the handlers (the order
  API's operations are generated from their ``x-encrypted`` fields and sent in a real
  envelope; STK and POS requests carry the run's device's ``X-MAC``, bank notices the
  gateway's signature); a refused case must leave the money tables as they were;
- **unsigned**: the published document as it is, no credentials: every case of an operation
  that needs them must be refused with its documented answer, and the money tables must be
  the same after the whole pass.

Checks that cannot apply as schemathesis words them are configured (``CHECKS_TOML``) and
the reasons are in docs/RELIABILITY.md. The figures: cases run per pass, failures, the books.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import requests
from Crypto.PublicKey import RSA

from app import fixtures
from chaos import api_fuzz_devices
from chaos.server import ROOT, Served
from recharge.config import Settings
from recharge.keys import MasterKeys, load_keys, write_keys
from recharge.mpay import accounts, credentials, events, merchants, registry, sessions
from recharge.mpay.env import Env
from recharge.orders import platforms as order_platforms

# What a refused request must leave as it was: rows of the money tables, the ledger's totals.
BOOKS_SQL = """SELECT (SELECT count(*) FROM transfers) AS transfers,
 (SELECT coalesce(sum(debits_posted), 0)::text || '/' || coalesce(sum(debits_pending), 0)::text FROM accounts) AS ledger,
 (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM orders) AS orders,
 (SELECT count(*) FROM kkt_trades) AS kkt_trades, (SELECT count(*) FROM cards) AS cards,
 (SELECT count(*) FROM mpay_payments) AS mpay_payments, (SELECT count(*) FROM mpay_withdrawals) AS withdrawals,
 (SELECT count(*) FROM mpay_bill_payments) AS bills, (SELECT count(*) FROM mpay_refunds) AS refunds,
 (SELECT count(*) FROM wallet_loads) AS wallet_loads"""
MPAY = "/mpay/v1"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
ADMIN_TOKEN, SMS_SECRET, IVR_SECRET = "fuzz-admin-token", "fuzz-sms-secret", "fuzz-ivr-secret"
LOGIN, PAY = "Fuzz2login9", "246810"
PLATFORM_ENV = {
    "RECHARGE_ADMIN_TOKEN": ADMIN_TOKEN, "RECHARGE_SMS_SHARED_SECRET": SMS_SECRET,
    "RECHARGE_MPAY_IVR_SECRET": IVR_SECRET,
    "RECHARGE_SWEEPER_INTERVAL_S": "3600",  # nothing moves the books but the requests themselves
    "RECHARGE_MPAY_ARGON2_TIME_COST": "1", "RECHARGE_MPAY_ARGON2_MEMORY_KIB": "1024",
    "RECHARGE_MPAY_AUTH_FAIL_PER_IP": "1000000",  # fuzzed wrong passwords must not lock out the run's logins
}
# Where schemathesis's own wording of a check does not fit a documented design (docs/RELIABILITY.md
# "HTTP fuzzing"): business refusals are HTTP 200 on the order API, the card service and /mpay/v1, and
# missing_required_header expects 401 for a missing Authorization whatever it is told (/mpay/v1: 1003).
REFUSED_200 = "^/(APPLLogin|AcctQueryLNT|CreateAutoLoadOrder|s/get|mpay/v1/)"
CHECKS_TOML = f"""
[checks]
max_response_time = 10.0
positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]

[[operations]]
include-path-regex = "{REFUSED_200}"
checks.ignored_auth.enabled = false
checks.negative_data_rejection.expected-statuses = ["200", "400", "401", "403", "404", "405", "406", "413", "415", "422"]
checks.missing_required_header.expected-statuses = ["200", "400", "401", "403", "406", "415", "422"]

[[operations]]
include-path-regex = "^/mpay/v1/"
checks.missing_required_header.enabled = false
"""


async def _provision(dsn: str, data_dir: Path) -> dict[str, Any]:
    """The run's own merchant, key, platform, customer, operators and partner merchant (no HTTP)."""
    env = Env.of(Settings(), load_keys(data_dir / "keys.json"))
    conn = await asyncpg.connect(dsn)
    try:
        code = await fixtures.fresh_merchant_code(conn)
        merchant_id = await fixtures.funded_merchant(conn, code, 10**9)
        license_key, terminal = "F" + secrets.token_hex(12), f"{code}{fixtures.random_digits(4)}"
        await conn.execute("INSERT INTO license_keys (license_key, merchant_id) VALUES ($1, $2)", license_key, merchant_id)
        await conn.execute("INSERT INTO terminals (code, merchant_id, kind) VALUES ($1, $2, 'pos')", terminal, merchant_id)
        raw = int("8" + fixtures.random_digits(8))
        platform = await order_platforms.register_platform(conn, platform_raw=str(raw), name=f"fuzz {raw}",
                                                           merchant_code=code, pki_no=fixtures.random_digits(8))
        key_path = data_dir / f"fuzz-platform-{raw}.pem"
        await order_platforms.add_public_key(conn, platform.id, "1", order_platforms.generate_key_pair(key_path),
                                             min_bits=2048)
        msisdn = "1390002" + fixtures.random_digits(4)
        body = {"province": "430000", "brand": "GOTONE", "status": "normal", "name": "模糊",
                "id_type": "id_card", "id_number": "430102199001011234"}
        async with conn.transaction():
            await events.set_subscribers(conn, env, [registry.validate(msisdn, body)], "fuzz")
            account = (await accounts.open_account(conn, env, msisdn)).account
            for kind, password in (("login", LOGIN), ("pay", PAY)):
                await credentials.replace(conn, env.hasher, account["id"], kind, password, initial=False)
        operators = {}
        for role in ("ops", "counter", "cs", "boss"):
            name = f"fz{role}{secrets.token_hex(3)}"
            operators[role] = (name, await sessions.add_operator(conn, env, name, role,
                                                                 "HN0001" if role == "counter" else None))
        partner, partner_key = "F" + secrets.token_hex(5).upper(), RSA.generate(2048)
        await merchants.add(conn, partner, "fuzz", "GENERAL", partner_key.publickey().export_key().decode())
        devices = await api_fuzz_devices.provision(conn, env, int(account["id"]), msisdn,
                                                   data_dir / "keys.json")
    finally:
        await conn.close()
    return {**devices, "license_key": license_key, "terminal": terminal,
            "order": {"raw": raw, "crt": 1, "key_pem": key_path.read_text()},
            "customer": {"login": msisdn, "password": LOGIN}, "operator_logins": operators,
            "merchant": {"id": partner, "key_pem": partner_key.export_key().decode()}}


def login(base_url: str, who: str, password: str, path: str = "/auth/login", field: str = "login") -> str:
    reply = requests.post(f"{base_url}{MPAY}{path}", json={field: who, "password": password},
                          headers={"X-Request-Id": secrets.token_hex(8)}, timeout=30).json()
    if reply["code"] != "0000":
        raise RuntimeError(f"fuzz login refused: {reply['code']}")
    return str(reply["data"]["token"])


def credentials_for(base_url: str, dsn: str, data_dir: Path) -> dict[str, Any]:
    found = asyncio.run(_provision(dsn, data_dir))
    found["customer"]["token"] = login(base_url, found["customer"]["login"], LOGIN)
    api_fuzz_devices.open_wallet(base_url, found)
    found["operators"] = {role: login(base_url, name, password, "/ops/login", "operator")
                          for role, (name, password) in found.pop("operator_logins").items()}
    return {**found, "admin_token": ADMIN_TOKEN, "sms_secret": SMS_SECRET, "ivr_secret": IVR_SECRET,
            "base_url": base_url, "dsn": dsn}


def signed_document(doc: dict[str, Any]) -> dict[str, Any]:
    """The document the signed pass generates from: the order API's operations take their
    ``x-encrypted`` fields as the body (the hooks put them in a real envelope)."""
    variant = copy.deepcopy(doc)
    for item in variant["paths"].values():
        for op in item.values():
            if not isinstance(op, dict) or "x-signed" not in op:
                continue
            content = op["requestBody"]["content"]["application/json"]
            content["schema"] = content["schema"]["x-encrypted"]
    return variant


def books(dsn: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return dict(await conn.fetchrow(BOOKS_SQL))
        finally:
            await conn.close()
    return asyncio.run(read())


def run_pass(name: str, doc: dict[str, Any], creds: dict[str, Any], work: Path, *, examples: int, seed: int,
             phases: str, timeout_s: float) -> dict[str, Any]:
    """One schemathesis CLI run; its JSON report's figures, the hooks' counts and the CLI's exit status."""
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.json").write_text(json.dumps(doc))
    (work / "checks.toml").write_text(CHECKS_TOML)
    config = work / f"{name}-config.json"
    stats = work / f"{name}-stats.json"
    config.write_text(json.dumps({**creds, "signed": name == "signed", "stats": str(stats)}))
    reports = work / f"{name}-reports"
    shutil.rmtree(reports, ignore_errors=True)
    cmd = [SCHEMATHESIS, "--config-file", str(work / "checks.toml"), "run", str(work / f"{name}.json"),
           "--url", creds["base_url"], "--mode", "all", "--phases", phases,
           "--max-examples", str(examples), "--seed", str(seed), "--workers", "1", "--no-shrink",
           "--generation-database", "none", "--suppress-health-check", "all", "--request-timeout", "30",
           "--report", "json", "--report-dir", str(reports), "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "chaos.api_fuzz_hooks", "RECHARGE_FUZZ_CONFIG": str(config),
           "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    with (work / f"{name}.log").open("w") as log:
        # cwd: the run's folder, where schemathesis keeps its cache (.schemathesis/), never the checkout
        done = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
    report = json.loads(next(reports.glob("json-*.json")).read_text()) if reports.exists() and any(
        reports.glob("json-*.json")) else {}
    counted = json.loads(stats.read_text()) if stats.exists() else {"cases": {}, "refused": {}}
    return {"exit": done.returncode, "seconds": round(time.monotonic() - started, 1),
            "cases": sum(counted["cases"].values()), "refused": sum(counted["refused"].values()),
            "operations": len(counted["cases"]), "relogins": counted.get("relogins", 0),
            "books_checked": counted.get("books_checked", 0), "answers": counted.get("answers", {}),
            "generated": report.get("test_cases", {}).get("generated"),
            "failures": [{k: f.get(k) for k in ("code", "title", "count", "operations")}
                         for f in report.get("failures", [])],
            "errors": report.get("errors", []), "log": str(work / f"{name}.log")}


def fuzz(data_dir: Path, *, database_url: str | None = None, examples: int = 3, seed: int = 0,
         phases: str = "fuzzing", timeout_s: float = 900.0) -> dict[str, Any]:
    """Start the platform, fuzz it signed then unsigned, stop it; the figures (``ok``: no failure)."""
    from recharge import db

    served = Served(data_dir / "serve", database_url=database_url, demo=False, env=PLATFORM_ENV)
    if not (served.data_dir / "keys.json").exists():  # keys of the run's own (no demo data set)
        write_keys(served.data_dir / "keys.json", MasterKeys.generate(demo=True))
    served.start()
    embedded = None if database_url else db.EmbeddedPostgres(served.data_dir / "pgdata")  # a handle of our own
    try:
        base_url = f"http://127.0.0.1:{served.http_port}"
        dsn = database_url or (embedded.uri if embedded else "")
        doc = requests.get(f"{base_url}/openapi.json", timeout=30).json()
        creds = credentials_for(base_url, dsn, served.data_dir)
        signed = run_pass("signed", signed_document(doc), creds, data_dir / "fuzz", examples=examples, seed=seed,
                          phases=phases, timeout_s=timeout_s)
        before = books(dsn)
        unsigned = run_pass("unsigned", doc, creds, data_dir / "fuzz", examples=examples, seed=seed + 1,
                            phases=phases, timeout_s=timeout_s)
        after = books(dsn)
    finally:
        served.stop()
        if embedded is not None:
            embedded.cleanup()
    passes = {"signed": signed, "unsigned": unsigned}
    ok = all(p["exit"] == 0 and not p["failures"] and not p["errors"] for p in passes.values()) and before == after
    operations = sum(1 for item in doc["paths"].values() for method in item if method != "parameters")
    return {"cases": signed["cases"] + unsigned["cases"], "operations": operations, "passes": passes,
            "unsigned_books_unchanged": before == after, "books": {"before": before, "after": after}, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    """``python -m chaos.api_fuzz``: the HTTP fuzzing alone (``make chaos`` runs it after the faults)."""
    import argparse
    import random

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--examples", type=int, default=25, help="examples per operation and generation mode")
    p.add_argument("--phases", default="coverage,fuzzing")
    p.add_argument("--seed", type=int, default=random.SystemRandom().randrange(2**31))
    p.add_argument("--data-dir", type=Path, default=ROOT / "var" / "api-fuzz")
    a = p.parse_args(argv)
    work = a.data_dir / f"{a.seed}-{secrets.token_hex(3)}"
    result = fuzz(work, database_url=os.environ.get("DATABASE_URL") and _own_database(a.seed), examples=a.examples,
                  seed=a.seed, phases=a.phases, timeout_s=7200.0)
    print(json.dumps(result, indent=1))
    print(f"api fuzz: seed {a.seed}, {result['cases']} cases, {'ok' if result['ok'] else 'FAILED'} (in {work})")
    return 0 if result["ok"] else 1


def _own_database(seed: int) -> str:
    from recharge import db

    url = os.environ["DATABASE_URL"]
    name = f"api_fuzz_{seed}_{secrets.token_hex(3)}"
    asyncio.run(db.execute_once(url, f'CREATE DATABASE "{name}"'))
    return db.with_database(url, name)


if __name__ == "__main__":
    sys.exit(main())
