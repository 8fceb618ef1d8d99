"""The operator console in a real headless Chromium (Debian's chromium + chromium-driver, driven
by Selenium; scripts/ensure_chromium.sh installs them): sign in with the demo administrator's
one-time password, the forced password change, every page with the demo data, resolving a load
left *loading* by an interrupted recharge (and the ledger posting it), registering a terminal
through seed 000's form, a card batch with its progress, settlement and its file, a viewer
refused, logout, and the business-hall counter (a clerk made by ``rechargectl mpay operator add``
signs in, opens an account, deposits cash; a forged form and a non-clerk are refused). One
browser serves the whole module; screenshots go to var/screenshots/console/.

Each test stands alone, in any order: it starts with no cookies (no session) at the desktop size,
and signs in an operator of its own (only the first uses the demo administrator, whose one-time
password it changes).

Selenium blocks, and the platform runs on the test's event loop: every browser step runs in a
thread (``asyncio.to_thread``) so the server keeps answering.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from app import demo, fixtures
from recharge.mpay import accounts, events, outbox, registry, sessions
from recharge.mpay.env import Env
from recharge.operators import accounts as operator_accounts
from tests.console_world import new_operator

pytestmark = pytest.mark.usefixtures("audited")
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "var" / "screenshots" / "console"
NEW_PASSWORD = "demo admin password 2026"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1366,900",
                "--lang=zh-CN", "--disable-gpu"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads  # type: ignore[attr-defined]
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: WebDriver) -> WebDriver:
    """The module's browser as a new visitor: no cookies (no console session), the desktop size."""
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.set_window_size(1366, 900)
    return chromium


@pytest.fixture
def base(console_base: str) -> str:
    return console_base


@pytest.fixture
async def admin(browser: WebDriver, base: str, conn: asyncpg.Connection) -> str:
    """The browser signed in as an administrator of the test's own (its one-time password changed
    to NEW_PASSWORD), on the dashboard; its name."""
    name, otp = await new_operator(conn, "admin")

    def steps() -> None:
        first_sign_in(browser, base, name, otp)
        until(browser, lambda d: d.find_elements(By.ID, "chart"))

    await asyncio.to_thread(steps)
    return name


def until(driver: WebDriver, check: Callable[[WebDriver], Any]) -> Any:
    return WebDriverWait(driver, WAIT_S).until(check)


def shot(driver: WebDriver, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def fill(driver: WebDriver, css: str, text: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, css)
    field.clear()
    field.send_keys(text)


def submit(driver: WebDriver, css: str) -> None:
    driver.find_element(By.CSS_SELECTOR, css).click()


def sign_in(driver: WebDriver, base: str, name: str, password: str) -> None:
    driver.get(f"{base}/console/login")
    fill(driver, "#name", name)
    fill(driver, "#password", password)
    submit(driver, "#sign-in")


def change_one_time_password(driver: WebDriver, otp: str) -> None:
    """On the forced password page: NEW_PASSWORD for ``otp``."""
    until(driver, lambda d: d.current_url.endswith("/console/password"))
    fill(driver, "#old", otp)
    fill(driver, "#new", NEW_PASSWORD)
    fill(driver, "#again", NEW_PASSWORD)
    submit(driver, "#change")
    until(driver, lambda d: not d.current_url.endswith("/console/password"))


def first_sign_in(driver: WebDriver, base: str, name: str, otp: str) -> None:
    """A new operator's first sign-in: the one-time password, then the forced change."""
    sign_in(driver, base, name, otp)
    change_one_time_password(driver, otp)


def heading(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "h1").text)


async def test_1_sign_in_with_the_demo_one_time_password_and_change_it(
    browser: WebDriver, base: str, settings: Any
) -> None:
    path = demo.admin_password_file(settings.data_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    otp = path.read_text(encoding="utf-8").strip()

    def steps() -> None:
        browser.get(f"{base}/console/")
        until(browser, lambda d: "/console/login" in d.current_url)
        shot(browser, "01_sign_in")
        sign_in(browser, base, "admin", "not the password")
        until(browser, lambda d: d.find_element(By.ID, "error").is_displayed())
        sign_in(browser, base, "admin", otp)
        until(browser, lambda d: d.current_url.endswith("/console/password"))
        assert browser.find_element(By.ID, "must-change").is_displayed()
        browser.get(f"{base}/console/loads")  # nothing else before the change
        until(browser, lambda d: d.current_url.endswith("/console/password"))
        fill(browser, "#old", otp)
        fill(browser, "#new", NEW_PASSWORD)
        fill(browser, "#again", NEW_PASSWORD)
        submit(browser, "#change")
        until(browser, lambda d: d.current_url.startswith(f"{base}/console/?"))
        until(browser, lambda d: d.find_element(By.ID, "chart").is_displayed())
        assert "admin" in browser.find_element(By.ID, "whoami").text

    await asyncio.to_thread(steps)


PAGES = ("/console/", "/console/loads", "/console/terminals", "/console/terminals/11552001", "/console/kkt/merchants",
         "/console/kkt/service-codes", "/console/kkt/license-keys", "/console/kkt/terminals",
         "/console/kkt/terminals/new", "/console/kkt/cards", "/console/kkt/cards/1680115500000126",
         "/console/kkt/batches", "/console/orders", "/console/settlement", "/console/platforms", "/console/ledger",
         "/console/ledger?owner=1155", "/console/actions", "/console/operators")


async def test_2_each_page_renders_with_the_demo_data(browser: WebDriver, base: str, admin: str) -> None:
    def steps() -> None:
        for path in PAGES:
            browser.get(base + path)
            assert browser.find_elements(By.ID, "refused") == [], path
            assert heading(browser), path
        browser.get(f"{base}/console/kkt/merchants")
        assert "1155" in browser.find_element(By.ID, "merchants").text
        browser.get(f"{base}/console/kkt/cards/1680115500000126")
        assert browser.find_element(By.ID, "card-no").text == "1680115500000126"
        browser.get(f"{base}/console/platforms")
        assert "7" in browser.find_element(By.ID, "platforms").text
        browser.find_element(By.ID, "lang-switch").click()
        until(browser, lambda d: heading(d) == "Order-API platforms")
        browser.find_element(By.ID, "lang-switch").click()
        until(browser, lambda d: heading(d) == "订单接口平台")

    await asyncio.to_thread(steps)


async def test_3_resolve_a_load_left_loading_by_an_interrupted_recharge(
    browser: WebDriver, base: str, admin: str, platform: Any, conn: asyncpg.Connection, test_keys: Any
) -> None:
    term = await fixtures.sim_terminal(conn, "127.0.0.1", platform.dd_port, test_keys[0])
    await asyncio.to_thread(term.client().sign_in, term.module())
    card = term.card(balance_cents=100)
    order_no = await fixtures.paid_order(conn, term.merchant_id, card.card_no, 2500)

    def interrupted_recharge() -> None:  # the card takes the load; the terminal never reports it
        with term.client().connect() as client:
            card.run_script(fixtures.recharge_until_dd16(client, card, order_no, 2500))

    await asyncio.to_thread(interrupted_recharge)
    assert await conn.fetchval("SELECT loading FROM orders WHERE order_no = $1", order_no)

    def steps() -> None:
        browser.get(f"{base}/console/loads")
        browser.find_element(By.LINK_TEXT, order_no).click()
        until(browser, lambda d: d.find_elements(By.ID, "resolve-form"))
        shot(browser, "03_load_to_resolve")
        submit(browser, "#outcome-posted")
        fill(browser, "#reason", "卡内余额 26.00 元，持卡人出示小票")
        submit(browser, "#resolve")
        until(browser, lambda d: f"/console/orders/{order_no}" in d.current_url)
        until(browser, lambda d: d.find_element(By.ID, "notice").is_displayed())
        statuses = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#transfers .transfer-status")]
        assert "posted" in statuses
        shot(browser, "04_load_resolved_ledger_posted")

    await asyncio.to_thread(steps)
    assert await conn.fetchval("SELECT state FROM orders WHERE order_no = $1", order_no) == "03"
    assert await conn.fetchval("SELECT status FROM transfers WHERE id = $1", f"order:{order_no}:pay") == "posted"
    assert await conn.fetchval("SELECT actor FROM operator_actions WHERE subject = $1", order_no) == f"console:{admin}"


async def test_4_register_an_sms_terminal_through_the_seed_000_form(
    browser: WebDriver, base: str, admin: str, conn: asyncpg.Connection
) -> None:
    phone = "139" + fixtures.random_digits(8)

    def steps() -> None:
        browser.get(f"{base}/console/kkt/terminals")
        browser.find_element(By.ID, "add-user-terminal").click()
        until(browser, lambda d: d.find_elements(By.ID, "user-terminal-form"))
        Select(browser.find_element(By.ID, "issuer")).select_by_value("1155")
        Select(browser.find_element(By.ID, "merchant")).select_by_value("1155")
        assert browser.find_element(By.ID, "kind-sms").is_selected()  # the seed's default choice
        fill(browser, "#number", phone)
        shot(browser, "05_seed000_add_user_terminal")
        submit(browser, "#finish")
        until(browser, lambda d: phone in d.find_element(By.ID, "user-terminals").text)

    await asyncio.to_thread(steps)
    row = await conn.fetchrow("SELECT kind, msisdn FROM terminals WHERE code = $1", phone)
    assert tuple(row) == ("sms", phone)


async def test_5_issue_a_card_batch_and_watch_its_progress(
    browser: WebDriver, base: str, admin: str, conn: asyncpg.Connection
) -> None:
    code = await fixtures.fresh_merchant_code(conn)
    await fixtures.funded_merchant(conn, code, 0, name="批量制卡测试")

    def steps() -> None:
        browser.get(f"{base}/console/kkt/batches")
        Select(browser.find_element(By.ID, "batch-merchant")).select_by_value(code)
        fill(browser, "#batch-count", "12000")
        submit(browser, "#batch-start")
        until(browser, lambda d: d.find_elements(By.ID, "batch-progress"))
        until(browser, lambda d: d.find_element(By.ID, "batch").get_attribute("data-state") == "done")
        assert browser.find_element(By.ID, "batch-numbers").text.startswith(f"1680{code}00000001")
        shot(browser, "06_card_batch_done")

    await asyncio.to_thread(steps)
    assert await conn.fetchval("SELECT count(*) FROM cards WHERE merchant_id ="
                               " (SELECT id FROM merchants WHERE code = $1)", code) == 12000


async def test_6_run_settlement_and_download_its_file(browser: WebDriver, base: str, admin: str) -> None:
    def steps() -> None:
        browser.get(f"{base}/console/settlement")
        fill(browser, "#settle-reason", "日终结算")
        submit(browser, "#settle")
        until(browser, lambda d: d.find_elements(By.ID, "notice"))
        link = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#files a.download"))
        name = link.text
        shot(browser, "07_settlement")
        link.click()
        target = Path(browser.downloads) / name  # type: ignore[attr-defined]
        deadline = time.monotonic() + WAIT_S
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert target.read_text(encoding="utf-8").startswith("section,biz_serial_no,order_no")

    await asyncio.to_thread(steps)


async def test_7_a_viewer_is_refused_an_action_and_logout_ends_the_session(
    browser: WebDriver, base: str, conn: asyncpg.Connection
) -> None:
    name = f"viewer{fixtures.random_digits(6)}"
    _, otp = await operator_accounts.add_operator(conn, name, "viewer", actor="test")
    batches = await conn.fetchval("SELECT count(*) FROM card_batch_jobs")

    def steps() -> None:
        first_sign_in(browser, base, name, otp)
        until(browser, lambda d: d.find_elements(By.ID, "chart"))
        browser.get(f"{base}/console/kkt/batches")
        assert browser.find_elements(By.ID, "batch-form") == []  # a viewer is not offered the form
        # ... and one posted anyway (the session's own CSRF token, a fresh form token) is refused
        browser.execute_script(
            "const f = document.createElement('form'); f.method = 'post'; f.action = '/console/kkt/batches';"
            "for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value],"
            " ['form_token', 'viewer-form-token-0001'], ['merchant', '1155'], ['count', '5'], ['kind', 'both']]) {"
            " const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }"
            "document.body.appendChild(f); f.submit();"
        )
        until(browser, lambda d: d.find_elements(By.ID, "refused"))
        shot(browser, "08_viewer_refused")
        browser.get(f"{base}/console/")
        browser.find_element(By.ID, "logout").click()
        until(browser, lambda d: d.find_elements(By.ID, "login-form"))
        browser.get(f"{base}/console/ledger")
        until(browser, lambda d: "/console/login" in d.current_url)

    await asyncio.to_thread(steps)
    assert await conn.fetchval("SELECT count(*) FROM card_batch_jobs") == batches


async def test_8_the_audit_runs_from_the_dashboard_which_reads_on_a_phone(
    browser: WebDriver, base: str, admin: str
) -> None:
    def steps() -> None:
        until(browser, lambda d: d.find_elements(By.ID, "run-audit"))
        submit(browser, "#run-audit")
        # the dashboard the admin fixture left already shows a notice (password_changed): wait for the
        # audit's own answer, not for any notice, or the next lookup races the page load (CI of 8465d62)
        until(browser, lambda d: "msg=audit_done" in d.current_url and d.find_elements(By.ID, "audit-status"))
        assert "ok" in browser.find_element(By.ID, "audit-status").get_attribute("class").split()
        shot(browser, "02_dashboard")
        browser.set_window_size(390, 844)
        browser.refresh()
        until(browser, lambda d: d.find_elements(By.ID, "chart"))
        shot(browser, "09_dashboard_phone")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400  # nothing forces a phone to scroll sideways

    await asyncio.to_thread(steps)


async def test_9_a_clerk_opens_an_account_at_the_counter_and_takes_cash(
    browser: WebDriver, base: str, platform: Any, conn: asyncpg.Connection
) -> None:
    env = Env.of(platform.ctx.settings, platform.ctx.keys)
    msisdn = "139" + fixtures.random_digits(8)
    await events.set_subscribers(conn, env, [registry.validate(msisdn, {
        "name": "李四", "id_type": "id_card", "id_number": "430102199202023456", "province": "430000"})], "test")
    clerk = f"clerk{fixtures.random_digits(6)}"
    initial = await sessions.add_operator(conn, env, clerk, "counter", "HN0001")  # rechargectl mpay operator add
    admin, admin_otp = await new_operator(conn, "admin")

    def find_and_send_code() -> None:
        # the API's operator signs in to the console: one identity
        first_sign_in(browser, base, clerk, initial)
        until(browser, lambda d: d.find_elements(By.ID, "nav-hall"))
        browser.find_element(By.ID, "nav-hall").click()
        fill(browser, "#hall-msisdn", msisdn)
        submit(browser, "#hall-find")
        until(browser, lambda d: d.find_elements(By.ID, "hall-no-account"))
        submit(browser, "#hall-open-otp button")
        until(browser, lambda d: d.find_elements(By.ID, "notice"))

    await asyncio.to_thread(find_and_send_code)
    row = await conn.fetchrow("SELECT text, text_enc FROM mpay_outbox WHERE msisdn = $1 ORDER BY id DESC LIMIT 1",
                              msisdn)
    code = (outbox.text_of(env.keys, row) or "")[3:9]  # what the customer reads out from the phone

    def open_and_deposit() -> None:
        form = browser.find_element(By.ID, "hall-open-form")
        Select(form.find_element(By.CSS_SELECTOR, ".id-type")).select_by_value("id_card")
        form.find_element(By.CSS_SELECTOR, ".id-number").send_keys("430102199202023456")
        form.find_element(By.CSS_SELECTOR, ".otp").send_keys(code)
        form.find_element(By.CSS_SELECTOR, ".reason").send_keys("客户持身份证到厅开户")
        shot(browser, "10_counter_open")
        submit(browser, "#hall-open-submit")
        until(browser, lambda d: d.find_elements(By.ID, "hall-alias"))
        fill(browser, "#hall-amount", "50")
        fill(browser, "#hall-cash-reason", "柜台现金充值")
        submit(browser, "#hall-cash-submit")
        until(browser, lambda d: d.find_element(By.ID, "cash-balance").text == "50.00")
        shot(browser, "11_counter_cash_deposited")
        # a form whose CSRF token is not the session's is refused
        browser.execute_script("document.querySelector('#hall-cash-form input[name=csrf]').value = 'forged';")
        fill(browser, "#hall-amount", "10")
        fill(browser, "#hall-cash-reason", "forged")
        submit(browser, "#hall-cash-submit")
        until(browser, lambda d: d.find_elements(By.ID, "refused"))
        browser.get(f"{base}/console/")
        browser.find_element(By.ID, "logout").click()
        until(browser, lambda d: d.find_elements(By.ID, "login-form"))
        first_sign_in(browser, base, admin, admin_otp)  # an administrator is no clerk: no counter
        until(browser, lambda d: d.find_elements(By.ID, "chart"))
        assert browser.find_elements(By.ID, "nav-hall") == []
        browser.get(f"{base}/console/hall?msisdn={msisdn}")
        until(browser, lambda d: d.find_elements(By.ID, "refused"))
        shot(browser, "12_counter_refused_to_a_non_clerk")

    await asyncio.to_thread(open_and_deposit)
    account = await accounts.live_by_msisdn(conn, msisdn)
    assert account is not None and (await accounts.balances(conn, account)).cash == 5000
    assert await conn.fetchval("SELECT count(*) FROM operator_actions WHERE actor = $1 AND action LIKE $2",
                               f"console:{clerk}", "mpay_counter_%") == 2
