"""``make loadtest`` end to end, briefly: provisioning, Locust headless against the running
platform, one request per DD stage, a non-zero result reported as a failure, reports written."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from app.runtime import RunningPlatform
from loadtest.run import parse_duration_s
from recharge import db
from recharge.config import Settings
from tests.conftest import MAX_SLACK, platform_of_its_own, slack_for_this_machine

ROOT = Path(__file__).resolve().parent.parent
# The run itself is 3 s; Locust's start, the provisioning and the report take most of the rest. This bound only
# turns a hang into a failure: 120 s on an idle machine, stretched by its load (a load average above 20 on two
# cores took longer than 120 s).
RUN_BOUND_S = 120.0
SIGN_IN_STAGES = ("DD01", "DD03", "DD05", "DD07")
RECHARGE_STAGES = ("DD11", "DD13", "DD15", "DD17", "DD19")


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("45s", 45), ("2m", 120), ("1h30m", 5400)])
def test_durations_read_like_locust_run_time(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "m"])
def test_a_malformed_duration_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration_s(text)


@pytest.fixture
async def own_platform(empty_database: str, settings: Settings) -> AsyncIterator[RunningPlatform]:
    """The platform on a database of its own: the load test's fixed merchant codes (90xx) and
    card numbers must not meet the random merchants and card batches of other tests."""
    conn = await asyncpg.connect(empty_database)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    async with platform_of_its_own(settings.replace(database_url=empty_database)) as running:
        yield running


@pytest.mark.timeout(RUN_BOUND_S * MAX_SLACK + 60)
async def test_load_run_reports_every_stage_and_counts_only_deliberate_failures(
    own_platform: RunningPlatform, settings: Settings, tmp_path: Path
) -> None:
    platform = own_platform
    reports = tmp_path / "reports"
    env = {
        **os.environ,
        "DATABASE_URL": platform.dsn,
        "RECHARGE_KEY_FILE": str(settings.resolved_key_file),
        "RECHARGE_SMS_SHARED_SECRET": settings.sms_shared_secret or "",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.run", "--users", "19", "--spawn-rate", "19", "--duration", "3s",
        "--pacing-s", "0.5", "--deliberate-failure-rate", "0.4", "--user-classes",
        "TerminalUser,OrderApiUser,KktRestUser,KktSoapUser,SmsUser,MpaySmsUser,MpayWebUser,MpayMerchantUser,"
        "WalletPosUser,WalletStkUser",
        "--dd-port", str(platform.dd_port), "--http-port", str(platform.http_port),
        "--data-dir", str(tmp_path / "data"), "--reports", str(reports),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    bound_s = RUN_BOUND_S * slack_for_this_machine()
    try:
        output, _ = await asyncio.wait_for(process.communicate(), bound_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"make loadtest did not finish within {bound_s:.0f} s") from None
    text = output.decode(errors="replace")
    assert "using the platform already answering" in text, text[-3000:]
    assert process.returncode == 0, text[-3000:]

    (summary_path,) = reports.glob("*_summary.json")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    stages = summary["by_request"]
    for stage in SIGN_IN_STAGES + RECHARGE_STAGES:
        assert stages[f"DD {stage}"]["requests"] > 0, stage
    for stage in SIGN_IN_STAGES + RECHARGE_STAGES[1:]:
        assert stages[f"DD {stage}"]["failures"] == 0, stage
    for request in ("POST APPLLogin", "POST CreateAutoLoadOrder", "POST AcctQueryLNT",
                    "GET /s/get cTRequest 0011", "POST /s/sp.php soapCardTrade 0011", "GET /sms/inbound YECX",
                    "GET /sms/inbound mpay CX", "POST /mpay/v1/auth/login", "GET /mpay/v1/me/balance",
                    "POST /mpay/v1/merchant/payments", "GET /mpay/v1/merchant/payments/{merchant_order_no}",
                    "POST /mpay/v1/pos/batches", "POST /mpay/v1/stk account.balance"):
        assert stages[request]["requests"] > 0, request
        assert stages[request]["failures"] == 0, request
    # The deliberate unknown orders were answered 0x99 and reported as DD11 failures, and
    # they are the only failures.
    assert summary["unexpected_failures"] == 0
    assert summary["ledger_audit"] == "ok"
    assert summary["deliberate_failures"] == stages["DD DD11"]["failures"] > 0
    assert {f["error"] for f in summary["failure_kinds"]} == {"DD11 answered 0x99 (deliberate)"}
    # The platform agrees: what Locust counted as recharges finished, the server loaded.
    assert summary["platform"]["recharge_recharges_total"]["result=loaded"] >= stages["DD DD17"]["requests"]
    stamp = summary_path.name.removesuffix("_summary.json")
    assert (reports / f"{stamp}_stats.csv").exists()
    assert (reports / f"{stamp}.html").exists()
