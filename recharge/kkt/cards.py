"""KaKaTong host cards and their reference data: numbers, passwords, batches, states.

What the card service (``recharge.kkt.service``), the CLI (``app.kkt_cli``), the admin API
(``http_api.admin``) and the demo data share: card-number rules (``1680`` ‖ issuing merchant
(4) ‖ sequence (8); an 8-digit short number is expanded with a merchant), the password
scheme (the client sends the lowercase hex MD5 of the 6-digit password or the 6 digits; we
store ``PBKDF2-SHA256(md5hex, salt ‖ pepper)``, the pepper derived from the master key file,
never stored in the database), and the operator's reference-data writes (acceptance: which
merchants serve which issuer's cards, ``set_acceptance``). Every operator
write records who and why in ``operator_actions``. Every write of reference data (merchants,
terminals, license keys, service codes, points rules) empties this process's reference cache
(``recharge.kkt.reference``), so the change applies here at once and elsewhere within its TTL.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from recharge.keys import MasterKeys
from recharge.kkt import reference as kkt_reference
from recharge.ledger import transfers as ledger
from recharge.operators.actions import record_action

CARD_PREFIX = "1680"
CARD_KINDS = ("sv", "points", "both", "cpu")
CARD_STATES = ("inactive", "active", "lost", "cancelled", "frozen", "reissued")
TERMINAL_KINDS = ("pos", "operator", "admin", "sms")
_CARD_RE = re.compile(r"[0-9]{16}")
_SHORT_RE = re.compile(r"[0-9]{8}")
_MD5_RE = re.compile(r"[0-9a-fA-F]{32}")
_PIN_RE = re.compile(r"[0-9]{6}")
_MERCHANT_RE = re.compile(r"[0-9]{4}")
_HASH_SCHEME = "p1"
BATCH_CHUNK = 5000  # cards per COPY in a batch
VERIFY_CACHE_ENTRIES = 65_536  # (stored hash, password) pairs whose PBKDF2 result is memoised


class AdminError(ValueError):
    """An operator request that cannot be done as asked (the text says why, no secrets)."""


# --- card numbers -------------------------------------------------------------------------


def expand_card_no(raw: str, merchant_code: str | None) -> str | None:
    """The 16-digit card number for ``raw`` (16 digits, or 8 with the merchant), else None."""
    if _CARD_RE.fullmatch(raw):
        return raw
    if _SHORT_RE.fullmatch(raw) and merchant_code and _MERCHANT_RE.fullmatch(merchant_code):
        return CARD_PREFIX + merchant_code + raw
    return None


def card_no_for(merchant_code: str, sequence: int) -> str:
    if not _MERCHANT_RE.fullmatch(merchant_code) or not 0 <= sequence <= 99_999_999:
        raise AdminError("card numbers need a 4-digit merchant and a sequence of at most 8 digits")
    return f"{CARD_PREFIX}{merchant_code}{sequence:08d}"


# --- passwords ----------------------------------------------------------------------------


def password_pepper(keys: MasterKeys) -> bytes:
    """The pepper for card passwords: derived from the key file, so a database alone cannot
    be brute-forced over the 10^6 possible passwords."""
    return _pepper_of(keys.maint)


@functools.lru_cache(maxsize=4)
def _pepper_of(maint: bytes) -> bytes:
    # every request builds its kkt.Config: derive the pepper once per key, not per request
    return hmac.new(maint, b"recharge/kkt card password pepper v1", hashlib.sha256).digest()


def normalise_password(raw: str | None) -> str | None:
    """The lowercase hex MD5 the service hashes: from 32 hex digits or a bare 6-digit PIN."""
    if raw is None:
        return None
    if _MD5_RE.fullmatch(raw):
        return raw.lower()
    if _PIN_RE.fullmatch(raw):
        return hashlib.md5(raw.encode("ascii")).hexdigest()
    return None


def hash_password(md5_hex: str, pepper: bytes, iterations: int) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", md5_hex.encode("ascii"), salt + pepper, iterations)
    return f"{_HASH_SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(stored: str | None, md5_hex: str, pepper: bytes) -> bool:
    """Constant-time check of a normalised password against a stored hash."""
    if not stored:
        return False
    return _verify_cached(stored, md5_hex, pepper)


@functools.lru_cache(maxsize=VERIFY_CACHE_ENTRIES)
def _verify_cached(stored: str, md5_hex: str, pepper: bytes) -> bool:
    # Memoised in process memory only: a card's next trade with the same password skips the
    # PBKDF2 rounds (≈1 ms of CPU). A new password or salt is a new stored hash, a new key.
    try:
        scheme, rounds, salt_hex, digest_hex = stored.split("$")
        if scheme != _HASH_SCHEME:
            return False
        salt, want, iterations = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex), int(rounds)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha256", md5_hex.encode("ascii"), salt + pepper, iterations)
    return hmac.compare_digest(got, want)


# --- reference data (operator writes) -----------------------------------------------------


async def merchant_id_of(conn: asyncpg.Connection, code: str) -> int:
    merchant_id = await conn.fetchval("SELECT id FROM merchants WHERE code = $1", code)
    if merchant_id is None:
        raise AdminError(f"merchant {code} does not exist")
    return int(merchant_id)


async def upsert_merchant(
    conn: asyncpg.Connection,
    code: str,
    name: str,
    *,
    issuing: bool = True,
    consuming: bool = True,
    closed: bool = False,
    actor: str = "operator",
) -> int:
    if not _MERCHANT_RE.fullmatch(code):
        raise AdminError("a merchant code is 4 digits")
    if not name or len(name) > 100:
        raise AdminError("a merchant name is 1 to 100 characters")
    merchant_id = await conn.fetchval(
        "INSERT INTO merchants (code, name, is_issuing, is_consuming, closed) VALUES ($1,$2,$3,$4,$5)"
        " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, is_issuing = EXCLUDED.is_issuing,"
        " is_consuming = EXCLUDED.is_consuming, closed = EXCLUDED.closed RETURNING id",
        code, name, issuing, consuming, closed,
    )
    kkt_reference.invalidate()
    await record_action(conn, actor, "merchant_upsert", code, "operator request",
                        issuing=issuing, consuming=consuming, closed=closed)
    return int(merchant_id)


async def upsert_terminal(
    conn: asyncpg.Connection,
    code: str,
    merchant_code: str,
    kind: str,
    *,
    msisdn: str | None = None,
    enabled: bool = True,
    daily_recharge_limit_cents: int | None = None,
    issuing_merchant_code: str | None = None,
    actor: str = "operator",
) -> None:
    """Create or update a terminal of ``merchant_code`` (its consuming merchant). Its issuing
    merchant (seed 000's 所属发卡商户; default: the same merchant) must issue cards."""
    if not re.fullmatch(r"[0-9A-Za-z]{1,16}", code):
        raise AdminError("a terminal code is 1 to 16 letters or digits")
    if kind not in TERMINAL_KINDS:
        raise AdminError(f"terminal kind must be one of {', '.join(TERMINAL_KINDS)}")
    if kind == "sms" and not (msisdn and re.fullmatch(r"1[0-9]{10}", msisdn)):
        raise AdminError("an SMS terminal needs the operator's 11-digit mobile number")
    if daily_recharge_limit_cents is not None and daily_recharge_limit_cents < 0:
        raise AdminError("a daily recharge limit is a non-negative number of cents")
    merchant_id = await merchant_id_of(conn, merchant_code)
    issuer_id = None
    if issuing_merchant_code is not None:
        issuer_id = await merchant_id_of(conn, issuing_merchant_code)
        if not await conn.fetchval("SELECT is_issuing FROM merchants WHERE id = $1", issuer_id):
            raise AdminError(f"merchant {issuing_merchant_code} does not issue cards")
    try:
        await conn.execute(
            "INSERT INTO terminals (code, merchant_id, kind, msisdn, enabled, daily_recharge_limit_cents,"
            " issuing_merchant_id) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (code) DO UPDATE SET"
            " merchant_id = EXCLUDED.merchant_id, kind = EXCLUDED.kind, msisdn = EXCLUDED.msisdn,"
            " enabled = EXCLUDED.enabled, daily_recharge_limit_cents = EXCLUDED.daily_recharge_limit_cents,"
            " issuing_merchant_id = EXCLUDED.issuing_merchant_id",
            code, merchant_id, kind, msisdn, enabled, daily_recharge_limit_cents, issuer_id,
        )
    except asyncpg.UniqueViolationError:
        raise AdminError("that mobile number is already another terminal's") from None
    kkt_reference.invalidate()
    await record_action(conn, actor, "terminal_upsert", code, "operator request", kind=kind, enabled=enabled,
                        merchant=merchant_code, issuing_merchant=issuing_merchant_code or merchant_code)


async def upsert_license_key(
    conn: asyncpg.Connection,
    key: str,
    merchant_code: str,
    *,
    valid_to: dt.datetime | None = None,
    networks: list[str] | None = None,
    enabled: bool = True,
    test_mode: bool = False,
    actor: str = "operator",
) -> None:
    import ipaddress

    if not re.fullmatch(r"[0-9A-Za-z+/=._-]{16,512}", key):
        raise AdminError("a license key is 16 to 512 letters, digits or + / = . _ -")
    nets = networks or ["0.0.0.0/0", "::/0"]
    try:
        nets = [str(ipaddress.ip_network(n, strict=False)) for n in nets]
    except ValueError:
        raise AdminError("allowed networks must be CIDR blocks such as 10.0.0.0/8") from None
    merchant_id = await merchant_id_of(conn, merchant_code)
    await conn.execute(
        "INSERT INTO license_keys (license_key, merchant_id, enabled, valid_to, allowed_networks, test_mode)"
        " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (license_key) DO UPDATE SET merchant_id = EXCLUDED.merchant_id,"
        " enabled = EXCLUDED.enabled, valid_to = EXCLUDED.valid_to,"
        " allowed_networks = EXCLUDED.allowed_networks, test_mode = EXCLUDED.test_mode",
        key, merchant_id, enabled, valid_to, nets, test_mode,
    )
    kkt_reference.invalidate()
    # the key itself is a credential: the audit trail names only its merchant and tail
    await record_action(conn, actor, "license_key_upsert", f"{merchant_code}:…{key[-4:]}", "operator request",
                        enabled=enabled, networks=nets)


async def upsert_service_code(
    conn: asyncpg.Connection, merchant_code: str, item_code: str, name: str, *, actor: str = "operator"
) -> None:
    if not re.fullmatch(r"[0-9]{3,8}", item_code):
        raise AdminError("a service code (ITEMCODE) is 3 to 8 digits")
    if not name or len(name) > 20:
        raise AdminError("a service code's name is 1 to 20 characters")
    merchant_id = await merchant_id_of(conn, merchant_code)
    await conn.execute(
        "INSERT INTO service_codes (merchant_id, item_code, name) VALUES ($1,$2,$3)"
        " ON CONFLICT (merchant_id, item_code) DO UPDATE SET name = EXCLUDED.name",
        merchant_id, item_code, name,
    )
    kkt_reference.invalidate()
    await record_action(conn, actor, "service_code_upsert", f"{merchant_code}:{item_code}", "operator request")


async def upsert_points_rule(
    conn: asyncpg.Connection, merchant_code: str, cents_per_point: int, *, actor: str = "operator"
) -> None:
    if not 1 <= cents_per_point <= 100_000_000:
        raise AdminError("cents per point must be between 1 and 100000000")
    merchant_id = await merchant_id_of(conn, merchant_code)
    await conn.execute(
        "INSERT INTO points_rules (merchant_id, cents_per_point) VALUES ($1,$2)"
        " ON CONFLICT (merchant_id) DO UPDATE SET cents_per_point = EXCLUDED.cents_per_point",
        merchant_id, cents_per_point,
    )
    kkt_reference.invalidate()
    await record_action(conn, actor, "points_rule_upsert", merchant_code, "operator request",
                        cents_per_point=cents_per_point)


async def set_acceptance(
    conn: asyncpg.Connection, issuer_code: str, merchant_code: str, *, accepted: bool = True,
    actor: str = "operator",
) -> None:
    """Let the terminals of ``merchant_code`` serve the cards ``issuer_code`` issued (trades,
    queries, password changes, bindings), or stop them (``accepted=False``). A merchant always
    serves its own cards; any other merchant answers 52 unless accepted here."""
    if issuer_code == merchant_code:
        raise AdminError("a merchant always serves the cards it issued")
    issuer_id = await merchant_id_of(conn, issuer_code)
    merchant_id = await merchant_id_of(conn, merchant_code)
    if accepted:
        await conn.execute("INSERT INTO kkt_acceptance (issuer_id, merchant_id) VALUES ($1, $2)"
                           " ON CONFLICT DO NOTHING", issuer_id, merchant_id)
    else:
        await conn.execute("DELETE FROM kkt_acceptance WHERE issuer_id = $1 AND merchant_id = $2",
                           issuer_id, merchant_id)
    await record_action(conn, actor, "acceptance_set", f"{issuer_code}:{merchant_code}", "operator request",
                        accepted=accepted)


@dataclass(frozen=True, slots=True)
class Batch:
    first: str
    last: str
    count: int


_BIGINT_MAX = 2**63 - 1  # the columns' ranges: cards.per_txn_limit_cents bigint,
_INTEGER_MAX = 2**31 - 1  # cards.daily_count_limit integer


async def create_card_batch(
    conn: asyncpg.Connection,
    merchant_code: str,
    count: int,
    *,
    kind: str = "both",
    valid_from: dt.date | None = None,
    valid_to: dt.date | None = None,
    per_txn_limit_cents: int | None = None,
    daily_count_limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_count: int = 1_000_000,
    actor: str = "operator",
) -> Batch:
    """Generate ``count`` new, not yet activated cards after the merchant's highest number.

    Cards carry no password until activation (aCRequest) sets it. Written with COPY in
    chunks, in one transaction: a failure leaves no partial batch. ``progress`` is called
    with the number of cards written by each chunk.
    """
    if not 1 <= count <= max_count:
        raise AdminError(f"a batch has 1 to {max_count} cards")
    if per_txn_limit_cents is not None and not 0 <= per_txn_limit_cents <= _BIGINT_MAX:
        raise AdminError("a per-transaction limit is a non-negative number of cents")
    if daily_count_limit is not None and not 0 <= daily_count_limit <= _INTEGER_MAX:
        raise AdminError(f"a daily trade count limit is 0 to {_INTEGER_MAX}")
    if kind not in CARD_KINDS:
        raise AdminError(f"card kind must be one of {', '.join(CARD_KINDS)}")
    if valid_from and valid_to and valid_to < valid_from:
        raise AdminError("valid_to is before valid_from")
    async with conn.transaction():
        merchant_id = await merchant_id_of(conn, merchant_code)
        # serialise batches of one merchant so their numbers never overlap
        await conn.execute("SELECT id FROM merchants WHERE id = $1 FOR UPDATE", merchant_id)
        prefix = CARD_PREFIX + merchant_code
        highest = await conn.fetchval(
            "SELECT max(substr(card_no, 9)::bigint) FROM cards WHERE card_no LIKE $1 || '%'", prefix
        )
        start = int(highest or 0) + 1
        if start + count - 1 > 99_999_999:
            raise AdminError("the merchant's card number range is exhausted")
        for offset in range(0, count, BATCH_CHUNK):
            n = min(BATCH_CHUNK, count - offset)
            records = [
                (card_no_for(merchant_code, start + offset + i), merchant_id, kind, "inactive",
                 valid_from, valid_to, per_txn_limit_cents, daily_count_limit)
                for i in range(n)
            ]
            await conn.copy_records_to_table(
                "cards", records=records,
                columns=["card_no", "merchant_id", "kind", "state", "valid_from", "valid_to",
                         "per_txn_limit_cents", "daily_count_limit"],
            )
            if progress:
                progress(n)
        batch = Batch(card_no_for(merchant_code, start), card_no_for(merchant_code, start + count - 1), count)
        await record_action(conn, actor, "card_batch", f"{batch.first}-{batch.last}", "operator request",
                            count=count, kind=kind)
    return batch


_STATE_CHANGES = {
    # action: (allowed current states, new state)
    "lose": (("active", "frozen"), "lost"),
    "found": (("lost",), "active"),
    "freeze": (("active",), "frozen"),
    "unfreeze": (("frozen",), "active"),
    "cancel": (("inactive", "active", "lost", "frozen"), "cancelled"),
}


async def card_balances(conn: asyncpg.Connection, card_no: str) -> tuple[int, int]:
    """(stored value in cents, points) of a card; 0 for accounts not yet opened."""
    rows = await conn.fetch(
        "SELECT kind, credits_posted - debits_posted AS posted FROM accounts"
        " WHERE card_no = $1 AND kind = ANY($2::text[])",
        card_no, [ledger.AccountKind.CARD_PURSE.value, ledger.AccountKind.CARD_POINTS.value],
    )
    by_kind = {r["kind"]: int(r["posted"]) for r in rows}
    return by_kind.get("card_purse", 0), by_kind.get("card_points", 0)


async def change_card_state(
    conn: asyncpg.Connection, card_no: str, action: str, *, actor: str, reason: str
) -> str:
    """Mark a card lost / found / frozen / unfrozen / cancelled; returns its new state."""
    if action not in _STATE_CHANGES:
        raise AdminError(f"action must be one of {', '.join(_STATE_CHANGES)}")
    if not reason.strip():
        raise AdminError("a reason is required")
    allowed, new_state = _STATE_CHANGES[action]
    async with conn.transaction():
        state = await conn.fetchval("SELECT state FROM cards WHERE card_no = $1 FOR UPDATE", card_no)
        if state is None:
            raise AdminError(f"card {card_no} does not exist")
        if state not in allowed:
            raise AdminError(f"a {state} card cannot be {action}: allowed from {', '.join(allowed)}")
        if action == "cancel" and any(await card_balances(conn, card_no)):
            raise AdminError("the card still holds value or points: reissue it or refund first")
        await conn.execute("UPDATE cards SET state = $2 WHERE card_no = $1", card_no, new_state)
        await record_action(conn, actor, f"card_{action}", card_no, reason, previous=state)
    return new_state


async def reissue_card(
    conn: asyncpg.Connection, card_no: str, *, actor: str, reason: str, new_card_no: str | None = None
) -> str:
    """Replace a card (usually lost) with a new number: holder data, bindings, password,
    limits, stored value and points move to it; the old card becomes ``reissued`` (19)."""
    if not reason.strip():
        raise AdminError("a reason is required")
    async with conn.transaction():
        old = await conn.fetchrow("SELECT * FROM cards WHERE card_no = $1 FOR UPDATE", card_no)
        if old is None:
            raise AdminError(f"card {card_no} does not exist")
        if old["state"] not in ("active", "lost", "frozen"):
            raise AdminError(f"a {old['state']} card cannot be reissued")
        merchant_code = await conn.fetchval("SELECT code FROM merchants WHERE id = $1", old["merchant_id"])
        if new_card_no is None:
            highest = await conn.fetchval(
                "SELECT max(substr(card_no, 9)::bigint) FROM cards WHERE card_no LIKE $1 || '%'",
                CARD_PREFIX + merchant_code,
            )
            new_card_no = card_no_for(merchant_code, int(highest or 0) + 1)
        elif not _CARD_RE.fullmatch(new_card_no):
            raise AdminError("a card number is 16 digits")
        # the old holder's bindings move with the card (they are unique per number)
        try:
            await conn.execute(
                "INSERT INTO cards (card_no, merchant_id, kind, state, valid_from, valid_to, password_hash,"
                " per_txn_limit_cents, daily_count_limit, bound_mobile, bound_id_no, holder, activated_at)"
                " VALUES ($1,$2,$3,'active',$4,$5,$6,$7,$8,$9,$10,"
                " (SELECT holder FROM cards WHERE card_no = $11), now())",
                new_card_no, old["merchant_id"], old["kind"], old["valid_from"], old["valid_to"],
                old["password_hash"], old["per_txn_limit_cents"], old["daily_count_limit"],
                old["bound_mobile"], old["bound_id_no"], card_no,
            )
        except asyncpg.UniqueViolationError:
            raise AdminError(f"card {new_card_no} already exists") from None
        await conn.execute(
            "UPDATE cards SET state = 'reissued', reissued_to = $2, bound_mobile = NULL, bound_id_no = NULL"
            " WHERE card_no = $1", card_no, new_card_no,
        )
        for kind, ledger_name in ((ledger.AccountKind.CARD_PURSE, "CNY"), (ledger.AccountKind.CARD_POINTS, "PTS")):
            source = await conn.fetchrow("SELECT id, credits_posted - debits_posted AS posted FROM accounts"
                                         " WHERE card_no = $1 AND kind = $2", card_no, kind.value)
            if source is None or source["posted"] <= 0:
                continue
            target = await ledger.ensure_account(conn, ledger=ledger_name, kind=kind, card_no=new_card_no)
            transfer_id = f"kkt:reissue:{card_no}:{kind.value}"
            move = ledger.NewTransfer(
                transfer_id, int(source["id"]), target, int(source["posted"]), code="kkt_reissue",
                reference=new_card_no,
            )
            (await ledger.create_transfers(conn, [move]))[0].check(transfer_id)
        await record_action(conn, actor, "card_reissue", card_no, reason, new_card_no=new_card_no)
    return new_card_no


async def set_card_password(
    conn: asyncpg.Connection, card_no: str, raw_password: str, pepper: bytes, iterations: int
) -> None:
    md5_hex = normalise_password(raw_password)
    if md5_hex is None:
        raise AdminError("a password is 6 digits (or their lowercase hex MD5)")
    await conn.execute(
        "UPDATE cards SET password_hash = $2, password_failures = 0, locked_until = NULL WHERE card_no = $1",
        card_no, hash_password(md5_hex, pepper, iterations),
    )


async def reset_card_password(
    conn: asyncpg.Connection, card_no: str, raw_password: str, pepper: bytes, iterations: int, *, actor: str,
    reason: str,
) -> None:
    """An issuer's password reset (the holder at the desk): new password, lock lifted, recorded."""
    if not reason.strip():
        raise AdminError("a reason is required")
    async with conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM cards WHERE card_no = $1 FOR UPDATE", card_no):
            raise AdminError(f"card {card_no} does not exist")
        await set_card_password(conn, card_no, raw_password, pepper, iterations)
        await record_action(conn, actor, "card_password_reset", card_no, reason)


# --- demo data (seed 002's test section) -------------------------------------------------

DEMO_CARDS = [f"16801155{n:08d}" for n in range(125, 134)]  # 1680115500000125 … 133
DEMO_INACTIVE_CARD = "1680115500000125"  # the seed activates this one in its first example
DEMO_PASSWORD = "111111"
DEMO_FIRST_STANCE = 6698  # the seed's recharge example answers Stance 00006698
DEMO_HISTORY_STANCE = "00000010"  # the seed's tSRequest example asks for this serial
DEMO_HISTORY_TIME = dt.datetime(2007, 6, 1, 5, 27, 37, tzinfo=dt.UTC)  # 13:27:37 Asia/Shanghai


async def seed_demo(conn: asyncpg.Connection, keys: MasterKeys, merchant_id: int, terminal_code: str,
                    *, iterations: int = 1000) -> None:
    """Demo cards 125–133 (125 not yet activated; the others active with password 111111),
    a points rule, and one 2007 balance query with Stance 00000010 so that the seed's
    examples, run in its order against fresh demo data, answer as the seed shows."""
    pepper = password_pepper(keys)
    md5_hex = normalise_password(DEMO_PASSWORD)
    assert md5_hex is not None
    for card_no in DEMO_CARDS:
        inactive = card_no == DEMO_INACTIVE_CARD
        await conn.execute(
            "INSERT INTO cards (card_no, merchant_id, kind, state, password_hash, activated_at)"
            " VALUES ($1,$2,'both',$3,$4,$5) ON CONFLICT (card_no) DO NOTHING",
            card_no, merchant_id, "inactive" if inactive else "active",
            None if inactive else hash_password(md5_hex, pepper, iterations),
            None if inactive else dt.datetime.now(dt.UTC),
        )
    await conn.execute(
        "INSERT INTO points_rules (merchant_id, cents_per_point) VALUES ($1, 100) ON CONFLICT DO NOTHING",
        merchant_id,
    )
    # a fresh demo merchant starts its serials where the seed's example shows them
    await conn.execute("UPDATE merchants SET stance_seq = $2 WHERE id = $1 AND stance_seq = 0",
                       merchant_id, DEMO_FIRST_STANCE - 1)
    exists = await conn.fetchval(
        "SELECT 1 FROM kkt_trades WHERE merchant_id = $1 AND stance = $2", merchant_id, DEMO_HISTORY_STANCE
    )
    if not exists:
        await conn.execute(
            "INSERT INTO kkt_trades (merchant_id, stance, card_no, terminal_code, trade_type, trade_mode,"
            " kind, trade_name, purse_after_cents, created_at)"
            " VALUES ($1,$2,$3,$4,'0011','0','balance_query','储值查询',0,$5)",
            merchant_id, DEMO_HISTORY_STANCE, DEMO_CARDS[1], terminal_code, DEMO_HISTORY_TIME,
        )


async def card_summary(conn: asyncpg.Connection, card_no: str) -> dict[str, Any] | None:
    """What an operator may see of a card (never its password hash)."""
    row = await conn.fetchrow(
        "SELECT c.card_no, m.code AS merchant, c.kind, c.state, c.valid_from, c.valid_to, c.password_failures,"
        " c.locked_until, c.per_txn_limit_cents, c.daily_count_limit, c.bound_mobile, c.bound_id_no,"
        " c.holder::text AS holder,"
        " c.reissued_to, c.activated_at, c.created_at FROM cards c LEFT JOIN merchants m ON m.id = c.merchant_id"
        " WHERE c.card_no = $1", card_no,
    )
    if row is None:
        return None
    purse, points = await card_balances(conn, card_no)
    return {**dict(row), "holder": json.loads(row["holder"]), "balance_cents": purse, "points": points}

