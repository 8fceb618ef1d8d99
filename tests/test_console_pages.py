"""The operator console over HTTP: sign-in, sessions, roles, CSRF, one-time forms, security
headers, escaping, and each page and action against the running platform."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app import fixtures
from http_api.console import i18n
from tests.console_world import PASSWORD, ConsoleUser, hidden, new_operator

pytestmark = pytest.mark.usefixtures("audited")
TEMPLATES = Path(__file__).resolve().parent.parent / "http_api" / "console" / "templates"


@pytest.fixture
async def user(console_base: str) -> AsyncIterator[ConsoleUser]:
    u = ConsoleUser(console_base)
    yield u
    await u.close()


async def as_role(user: ConsoleUser, conn: asyncpg.Connection, role: str) -> str:
    name, otp = await new_operator(conn, role)
    await user.signed_in(name, otp)
    return name


PAGES = ["/console/", "/console/loads", "/console/terminals", "/console/terminals/11552001",
         "/console/kkt/merchants", "/console/kkt/service-codes", "/console/kkt/license-keys",
         "/console/kkt/terminals", "/console/kkt/terminals/new", "/console/kkt/cards", "/console/kkt/cards?q=13800000000",
         "/console/kkt/cards/1680115500000126", "/console/kkt/batches", "/console/orders", "/console/settlement",
         "/console/platforms", "/console/ledger", "/console/ledger?owner=1155", "/console/ledger/transfer",
         "/console/ledger/transfer?id=demo:fund:1155", "/console/actions", "/console/operators"]


async def test_no_page_answers_without_a_session_but_the_sign_in_page(user: ConsoleUser) -> None:
    for path in PAGES:
        status, _, r = await user.get(path)
        assert status == 303 and r.headers["Location"].startswith("/console/login?next="), path
    status, html, r = await user.get("/console/login")
    assert status == 200 and 'id="login-form"' in html
    assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    status, html, _ = await user.post("/console/kkt/batches", {"merchant": "1155", "count": "5"})
    assert status == 401 and "nothing was changed" in html.lower() or "未做任何更改" in html


async def test_sign_in_needs_its_form_token_and_the_right_password(user: ConsoleUser, conn: asyncpg.Connection) -> None:
    name, otp = await new_operator(conn, "viewer")
    status, _, _ = await user.post("/console/login", {"login_csrf": "x" * 32, "name": name, "password": otp})
    assert status == 403
    status, html, _ = await user.sign_in(name, "wrong")
    assert status == 401 and 'id="error"' in html
    status, _, r = await user.sign_in(name, otp)
    assert status == 303 and r.headers["Location"] == "/console/password"
    cookie = r.headers.getall("Set-Cookie")
    session_cookie = next(c for c in cookie if c.startswith("console_session="))
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie and "Path=/console/" in session_cookie


async def test_five_wrong_passwords_lock_the_operator_and_the_dashboard_shows_it(
    user: ConsoleUser, conn: asyncpg.Connection, console_base: str
) -> None:
    name, otp = await new_operator(conn, "viewer")
    for _ in range(5):
        await user.sign_in(name, "wrong")
    status, html, _ = await user.sign_in(name, otp)
    assert status == 401 and ("locked" in html or "锁定" in html)
    admin = ConsoleUser(console_base)
    try:
        await as_role(admin, conn, "admin")
        _, html, _ = await admin.get("/console/")
        assert name in html
    finally:
        await admin.close()


async def test_a_one_time_password_must_be_changed_before_anything_else(
    user: ConsoleUser, conn: asyncpg.Connection
) -> None:
    name, otp = await new_operator(conn, "operator")
    await user.sign_in(name, otp)
    status, _, r = await user.get("/console/loads")
    assert status == 303 and r.headers["Location"] == "/console/password"
    status, html, _ = await user.form("/console/password", "/console/password",
                                      {"old": otp, "new": "short", "again": "short"})
    assert status == 400
    status, _, _ = await user.form("/console/password", "/console/password",
                                   {"old": otp, "new": PASSWORD, "again": PASSWORD})
    assert status == 303
    status, _, _ = await user.get("/console/loads")
    assert status == 200


async def test_every_page_renders_for_an_admin_in_both_languages(user: ConsoleUser, conn: asyncpg.Connection) -> None:
    await as_role(user, conn, "admin")
    for path in PAGES:
        status, html, r = await user.get(path)
        assert status == 200, (path, html[:2000])
        assert "Content-Security-Policy" in r.headers and r.headers["X-Frame-Options"] == "DENY"
        assert "<script>" not in html  # no inline script anywhere
    assert "仪表盘" in (await user.get("/console/"))[1]
    status, _, r = await user.get("/console/lang?to=en&next=/console/loads")
    assert status == 303 and r.headers["Location"] == "/console/loads"
    assert "Loads awaiting customer service" in (await user.get("/console/loads"))[1]
    _, _, r = await user.get("/console/lang?to=en&next=https://evil.example/")
    assert r.headers["Location"] == "/console/"
    _, html, _ = await user.get("/console/kkt/merchants?msg=call+this+number")
    assert "call this number" not in html and "msg:" not in html
    for path in ("/console/static/console.css", "/console/static/console.js", "/console/no-such-page"):
        _, _, r = await user.get(path)
        assert r.headers["X-Content-Type-Options"] == "nosniff", path


async def test_a_viewer_is_refused_every_action_and_nothing_changes(user: ConsoleUser, conn: asyncpg.Connection) -> None:
    await as_role(user, conn, "viewer")
    before = await conn.fetchval("SELECT count(*) FROM operator_actions")
    _, html, _ = await user.get("/console/kkt/merchants")
    tokens = hidden(html)
    for path, data in (("/console/kkt/merchants", {"code": "9911", "name": "x"}),
                       ("/console/kkt/batches", {"merchant": "1155", "count": "3", "kind": "both"}),
                       ("/console/terminals/11552001/disable", {}),
                       ("/console/operators", {"name": "sneaky", "role": "admin"}),
                       ("/console/settlement", {"date": "2026-01-01", "reason": "x"})):
        status, page, _ = await user.post(path, {**tokens, "form_token": fixtures.random_digits(24), **data})
        assert status == 403, (path, status)
    assert await conn.fetchval("SELECT count(*) FROM operator_actions") == before
    assert await conn.fetchval("SELECT enabled FROM terminals WHERE code = '11552001'")
    status, page, _ = await user.get("/console/operators")  # an admin's page
    assert status == 403 and 'id="refused"' in page


async def test_a_forged_form_and_a_double_submission_change_nothing(user: ConsoleUser, conn: asyncpg.Connection) -> None:
    await as_role(user, conn, "operator")
    code = await fixtures.fresh_merchant_code(conn)
    _, html, _ = await user.get("/console/kkt/merchants")
    tokens = hidden(html)
    status, _, _ = await user.post("/console/kkt/merchants", {**tokens, "csrf": "forged", "code": code, "name": "x"})
    assert status == 403
    assert not await conn.fetchval("SELECT count(*) FROM merchants WHERE code = $1", code)
    name = "<script>alert(1)</script>商户"
    status, _, _ = await user.post("/console/kkt/merchants", {**tokens, "code": code, "name": name, "issuing": "on"})
    assert status == 303
    status, page, _ = await user.post("/console/kkt/merchants", {**tokens, "code": code, "name": "other"})
    assert status == 409
    assert await conn.fetchval("SELECT name FROM merchants WHERE code = $1", code) == name
    _, html, _ = await user.get(f"/console/kkt/merchants?q={code}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;商户" in html and "<script>alert" not in html


async def test_a_refused_domain_action_explains_why_and_frees_the_form(user: ConsoleUser, conn: asyncpg.Connection) -> None:
    await as_role(user, conn, "operator")
    _, html, _ = await user.get("/console/terminals")
    tokens = hidden(html)
    status, page, _ = await user.post("/console/terminals", {**tokens, "code": "11552001", "merchant": "1155",
                                                            "pki": fixtures.random_digits(8)})
    assert status == 400 and "already exists" in page
    code = fixtures.random_digits(8)
    status, _, r = await user.post("/console/terminals", {**tokens, "code": code, "merchant": "1155",
                                                         "pki": fixtures.random_digits(8)})
    assert status == 303 and r.headers["Location"].startswith(f"/console/terminals/{code}?")
    status, _, _ = await user.get("/console/orders/00000000000000000000")
    assert status == 404
    status, _, _ = await user.get("/console/orders/../../etc")
    assert status in (404, 303)


async def test_an_ended_session_is_refused_and_logout_ends_it(user: ConsoleUser, conn: asyncpg.Connection) -> None:
    name = await as_role(user, conn, "operator")
    _, html, _ = await user.get("/console/")
    status, _, r = await user.post("/console/logout", hidden(html))
    assert status == 303 and r.headers["Location"].startswith("/console/login")
    status, _, _ = await user.get("/console/")
    assert status == 303
    await user.sign_in(name, PASSWORD)
    await conn.execute("UPDATE operator_sessions SET idle_until = now() - interval '1 second'"
                       " WHERE operator_id = (SELECT id FROM operators WHERE name = $1)", name)
    status, _, r = await user.get("/console/")
    assert status == 303 and "/console/login" in r.headers["Location"]


async def test_settlement_runs_with_a_reason_and_its_file_downloads(user: ConsoleUser, conn: asyncpg.Connection) -> None:
    await as_role(user, conn, "operator")
    status, _, _ = await user.form("/console/settlement", "/console/settlement", {"date": "2026-01-02", "reason": ""})
    assert status == 400
    status, _, _ = await user.form("/console/settlement", "/console/settlement",
                                   {"date": "2026-01-02", "reason": "end of day"})
    assert status == 303
    _, html, _ = await user.get("/console/settlement")
    name = re.search(r'href="/console/settlement/files/(20260102_[^"]+)"', html)
    assert name is not None
    status, body, r = await user.get(f"/console/settlement/files/{name.group(1)}")
    assert status == 200 and body.startswith("section,") and "attachment" in r.headers["Content-Disposition"]
    for bad in ("..%2Fkeys.json", "keys.json", "20260102_7.csv.tmp"):
        assert (await user.get(f"/console/settlement/files/{bad}"))[0] == 404
    assert await conn.fetchval("SELECT actor FROM operator_actions WHERE action = 'settle_day'"
                               " AND subject = '2026-01-02' ORDER BY id DESC LIMIT 1") != ""


async def test_a_loading_load_is_resolved_through_the_domain_call(
    user: ConsoleUser, conn: asyncpg.Connection, platform: Any, test_keys: Any
) -> None:
    import asyncio

    term = await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card(balance_cents=100)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 200)

    def interrupted_recharge() -> None:
        with term.client().connect() as client:
            card.run_script(fixtures.recharge_until_dd16(client, card, order_no, 200))

    await asyncio.to_thread(interrupted_recharge)
    name = await as_role(user, conn, "operator")
    page = f"/console/loads/{order_no}"
    status, _, _ = await user.form(page, f"{page}/resolve", {"outcome": "posted", "reason": ""})
    assert status == 400
    status, _, r = await user.form(page, f"{page}/resolve", {"outcome": "posted", "reason": "card shows 3.00"})
    assert status == 303 and r.headers["Location"].startswith(f"/console/orders/{order_no}")
    assert await conn.fetchval("SELECT state FROM orders WHERE order_no = $1", order_no) == "03"
    assert await conn.fetchval("SELECT actor FROM operator_actions WHERE subject = $1", order_no) == f"console:{name}"
    _, html, _ = await user.get(f"/console/orders/{order_no}")
    assert "posted" in html
    _, html, _ = await user.get(page)
    assert 'id="resolve-form"' not in html


async def test_every_text_of_the_console_has_its_chinese() -> None:
    from recharge.kkt.cards import CARD_STATES, TERMINAL_KINDS
    from recharge.operators.accounts import ROLES

    texts: set[str] = set()
    for path in TEMPLATES.glob("*.html"):
        source = path.read_text(encoding="utf-8")
        texts |= set(re.findall(r'\bt\(\s*"([^"]+)"', source)) | set(re.findall(r"\bt\(\s*'([^']+)'", source))
    texts = {t for t in texts if not t.endswith(":")}  # prefixes of keys such as "state:03", checked below
    for path in TEMPLATES.parent.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        texts |= set(re.findall(r'Refusal\(\d+, "([^"]+)"', source)) | set(re.findall(r'title="([^"]+)"', source))
        texts |= {f"msg:{m}" for m in re.findall(r'msg="(\w+)"', source)}
    texts |= {f"msg:resolved_{o}" for o in ("posted", "voided")} | {f"msg:terminal_{w}" for w in ("unlock", "enable", "disable")}
    texts |= {f"state:0{n}" for n in range(1, 7)} | {f"card:{s}" for s in CARD_STATES} | set(ROLES)
    texts |= {f"kind:{k}" for k in TERMINAL_KINDS} | {f"job:{j}" for j in ("running", "done", "failed")}
    missing = sorted(t for t in texts if t not in i18n.ZH)
    assert missing == []
    assert i18n.translate("zh", "Page {page} of {pages}", page=2, pages=3) == "第 2 / 3 页"
    assert i18n.translate("en", "state:03") == "loaded"


async def test_console_cookies_are_secure_over_tls() -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from http_api.console.web import set_cookie

    plain = make_mocked_request("GET", "/console/")
    for request, secure in ((plain, False), (plain.clone(scheme="https"), True)):
        response = web.Response()
        set_cookie(request, response, "console_session", "token")
        header = response.cookies["console_session"].output()
        assert ("Secure" in header) is secure and "HttpOnly" in header and "SameSite=Strict" in header
