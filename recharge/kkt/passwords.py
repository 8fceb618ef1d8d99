"""Card password checks and the wrong-password lockout (SPEC 3.1, seed 001 2.6.3).

Five wrong passwords in a row (``kkt_password_max_failures``) lock a card for
``kkt_password_lock_s``; while it is locked no password is checked at all (every answer is
07, or 46 for a password change), and a right password resets the count.

Checks of one card take effect one at a time, in one order, so guesses sent in parallel
cannot all be checked before the lock is set (issue 14 item 1), and every wrong password that
was checked is counted:

- ``check_locked``: the caller holds the card's row lock (``SELECT … FOR UPDATE``), so the
  check and its counter update are serialised by PostgreSQL. Every trade that moves
  something, a password change and a binding check this way.
- ``check_unlocked``: a balance or points query's fast path reads the card without a lock.
  It checks a password there only on a card with no failure and no lock, and the verdict
  takes effect in one statement that requires the card to be still so (same password hash,
  no failure, no lock): a wrong one's counter update here, a right one's journal statement
  (``journal.finish`` with the returned guard). When the card changed in between it raises
  ``Contended`` and the caller runs the request again under the row lock.

Outcomes are counted in ``recharge_kkt_password_checks_total{outcome=right|wrong|locked}``.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from recharge import metrics
from recharge.kkt import cards
from recharge.kkt.messages import CommitThenRefuse, Config

WRONG = "07"

# One wrong password counted: the limit-th failure in a row locks the card and restarts the
# count. With a guard ($4, the hash the check used) only a card still clean is counted.
_FAILURE_SQL = (
    "UPDATE cards SET password_failures = CASE WHEN password_failures + 1 >= $2 THEN 0"
    " ELSE password_failures + 1 END,"
    " locked_until = CASE WHEN password_failures + 1 >= $2 THEN now() + make_interval(secs => $3)"
    " ELSE locked_until END WHERE card_no = $1 AND ($4::text IS NULL OR"
    " (password_hash = $4 AND password_failures = 0 AND locked_until IS NULL))"
)


class Contended(Exception):
    """The card changed while its password was checked without a lock: check it again under the lock."""


def _locked(card: asyncpg.Record) -> bool:
    return card["locked_until"] is not None and card["locked_until"] > dt.datetime.now(dt.UTC)


def _right(card: asyncpg.Record, raw: str | None, cfg: Config) -> bool:
    md5_hex = cards.normalise_password((raw or "").strip() or None)
    return md5_hex is not None and cards.verify_password(card["password_hash"], md5_hex, cfg.pepper)


def _refuse_locked(wrong_code: str) -> CommitThenRefuse:
    metrics.KKT_PASSWORD_CHECKS.labels("locked").inc()
    return CommitThenRefuse(wrong_code)


async def _count_failure(conn: asyncpg.Connection, card: asyncpg.Record, cfg: Config, guard: str | None) -> bool:
    s = cfg.settings
    status = await conn.execute(_FAILURE_SQL, card["card_no"], s.kkt_password_max_failures,
                                float(s.kkt_password_lock_s), guard)
    counted = status == "UPDATE 1"
    if counted:
        metrics.KKT_PASSWORD_CHECKS.labels("wrong").inc()
    return counted


def counted_right() -> None:
    """A right password took effect (the fast path's journal statement found its guard)."""
    metrics.child(metrics.KKT_PASSWORD_CHECKS, "right").inc()


async def check_locked(
    conn: asyncpg.Connection, card: asyncpg.Record, raw: str | None, cfg: Config, wrong_code: str = WRONG
) -> None:
    """Verify the password of a card whose row lock the caller holds; a wrong one counts,
    and the limit locks the card (all ``wrong_code``)."""
    if _locked(card):
        raise _refuse_locked(wrong_code)
    if _right(card, raw, cfg):
        if card["password_failures"] or card["locked_until"] is not None:
            await conn.execute(
                "UPDATE cards SET password_failures = 0, locked_until = NULL WHERE card_no = $1", card["card_no"]
            )
        counted_right()
        return
    await _count_failure(conn, card, cfg, None)
    raise CommitThenRefuse(wrong_code)


async def check_unlocked(conn: asyncpg.Connection, card: asyncpg.Record, raw: str | None, cfg: Config) -> str:
    """Verify the password of a card read without a lock. A right one returns the guard the
    journal statement must find unchanged (the stored hash); a wrong one is counted or
    refused (07); ``Contended`` when only the row lock can decide."""
    if _locked(card):
        raise _refuse_locked(WRONG)
    guard: str | None = card["password_hash"]
    if guard is None or card["password_failures"] or card["locked_until"] is not None:
        raise Contended()
    if _right(card, raw, cfg):
        return guard
    if not await _count_failure(conn, card, cfg, guard):
        raise Contended()
    raise CommitThenRefuse(WRONG)
