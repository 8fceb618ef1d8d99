"""No secret reaches the log (issue 14 item 8): ``rechargectl serve`` is sent requests an
attacker shapes so that the HTTP server logs them — request lines and headers over 8 KiB,
NUL and control bytes — carrying the SMS secret, the admin token and a license key in the
query string and in headers, next to ordinary requests that carry them too. Its whole
stderr must hold none of them (and must hold the shortened lines, so silence cannot pass).
The formatter and the server-log filter are also checked on their own."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.demo import DEMO_LICENSE_KEY
from app.logs import RedactingFormatter, redact
from http_api.server_log import ClientErrorFilter
from recharge.keys import MasterKeys, write_keys
from tests.conftest import ROOT

LONG = 9_000  # aiohttp's limit for a request line or a header is 8190 bytes


def start_serve(database_url: str, data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    write_keys(data_dir / "keys.json", MasterKeys.generate(demo=True))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--demo", "--dd-port", "0", "--http-port", "0",
         "--database-url", database_url, "--data-dir", str(data_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RECHARGE_DD_HOST": "127.0.0.1", "RECHARGE_HTTP_HOST": "127.0.0.1", **env},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return proc, int(dict(item.split("=") for item in line.split()[1:])["http_port"])
        if not line:
            break
    proc.kill()
    raise AssertionError(f"serve did not start: {proc.communicate()[1]}")


async def send(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    return answer


def attacks(sms_secret: str, admin_token: str, license_key: str) -> list[bytes]:
    kkt = f"/s/get?method=cTRequest&TRADETYPE=0011&TRADEMODE=0&CARDNO=1680115500000125&LICENSEKEY={license_key}"
    sms = f"/sms/inbound?secret={sms_secret}&from=13800000000&to=10658888&text=YECX"
    close = b"Host: x\r\nConnection: close\r\n"
    return [
        # over-long request lines: aiohttp quotes their start
        f"GET {kkt}&pad={'a' * LONG} HTTP/1.1\r\n".encode() + close + b"\r\n",
        f"GET {sms}{'b' * LONG} HTTP/1.1\r\n".encode() + close + b"\r\n",
        # over-long headers: aiohttp quotes the value's start (without the header's name)
        b"GET /sms/inbound?from=13800000000 HTTP/1.1\r\n" + close
        + f"X-SMS-Secret: {sms_secret}{'c' * LONG}\r\n\r\n".encode(),
        b"GET /admin/kkt/cards/1680115500000125 HTTP/1.1\r\n" + close
        + f"Authorization: Bearer {admin_token}{'d' * LONG}\r\n\r\n".encode(),
        # bytes the parser refuses inside the line or a header: it quotes the whole line
        f"GET {kkt}\x00 HTTP/1.1\r\n".encode() + close + b"\r\n",
        f"GET {sms} x HTTP/1.1\r\n".encode() + close + b"\r\n",
        b"GET /admin/kkt/cards/1 HTTP/1.1\r\n" + close + f"X-Admin-Token: {admin_token}\x01\r\n\r\n".encode(),
        # and ordinary requests carrying the same secrets
        f"GET {kkt} HTTP/1.1\r\n".encode() + close + b"\r\n",
        f"GET {sms} HTTP/1.1\r\n".encode() + close + b"\r\n",
        b"GET /admin/kkt/cards/1680115500000125 HTTP/1.1\r\n" + close
        + f"Authorization: Bearer {admin_token}\r\n\r\n".encode(),
    ]


async def test_secrets_never_reach_the_log_even_through_over_long_request_lines(
    empty_database: str, tmp_path: Path
) -> None:
    sms_secret, admin_token = "sms-" + secrets.token_hex(12), "adm-" + secrets.token_hex(12)
    proc, port = await asyncio.to_thread(start_serve, empty_database, tmp_path, {
        "RECHARGE_SMS_SHARED_SECRET": sms_secret, "RECHARGE_ADMIN_TOKEN": admin_token, "RECHARGE_LOG_LEVEL": "DEBUG",
    })
    try:
        answers = [await send(port, raw) for raw in attacks(sms_secret, admin_token, DEMO_LICENSE_KEY)]
        assert all(a.startswith(b"HTTP/1.") for a in answers)
        assert b"<PayInForm>" in answers[-3] and answers[-1].startswith(b"HTTP/1.1 200")  # the secrets work
        proc.send_signal(signal.SIGTERM)
        _, log = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log
    for secret in (sms_secret, admin_token, DEMO_LICENSE_KEY):
        assert secret not in log, f"{secret[:4]}… is in the log"
    assert "malformed HTTP request from 127.0.0.1: LineTooLong (HTTP 400)" in log, log[-3000:]


def test_the_formatter_redacts_query_strings_secret_parameters_and_headers_in_every_part() -> None:
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("bad URL http://pay.example.com/s/get?LICENSEKEY=K1 in {'X-SMS-Secret': 'S2'}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "fetching %s with %s", (
            "/sms/inbound?secret=S3&from=1", "Authorization: Bearer T4"), sys.exc_info())
    line = formatter.format(record)
    for secret in ("K1", "S2", "S3", "T4"):
        assert secret not in line, line
    assert "/sms/inbound?[redacted]" in line and "ValueError" in line  # the path and the trace stay
    assert redact("what? nothing to hide here") == "what? nothing to hide here"
    assert redact("form LICENSEKEY=K5&CARDPWD=96e79218965eb72c92a549dd5a330112") == (
        "form LICENSEKEY=[redacted]&CARDPWD=[redacted]")


def test_a_malformed_request_is_one_short_line_and_a_flood_of_them_is_left_out() -> None:
    from aiohttp.http_exceptions import LineTooLong

    def record() -> logging.LogRecord:
        try:
            raise LineTooLong(b"/s/get?LICENSEKEY=K6aaaa...", "8190")
        except LineTooLong:
            return logging.LogRecord("aiohttp", logging.ERROR, __file__, 1, "Error handling request from %s",
                                     ("10.1.2.3",), sys.exc_info())

    gate = ClientErrorFilter(interval_s=60)
    first = record()
    assert gate.filter(first) and first.levelno == logging.INFO and first.exc_info is None
    assert first.getMessage() == "malformed HTTP request from 10.1.2.3: LineTooLong (HTTP 400)"
    assert [gate.filter(record()) for _ in range(5)] == [False] * 5
    gate.interval_s = 0
    later = record()
    assert gate.filter(later) and later.getMessage().endswith("; 5 more left out of the log")
    assert "K6" not in later.getMessage()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_configure_logging_installs_the_redacting_formatter(level: str) -> None:
    script = ("import logging\nfrom app.logs import configure_logging\n"
              f"configure_logging({level!r})\n"
              "logging.getLogger('t').warning('GET /s/get?LICENSEKEY=K7 failed')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "GET /s/get?[redacted] failed" in done.stderr and "K7" not in done.stderr, done.stderr
