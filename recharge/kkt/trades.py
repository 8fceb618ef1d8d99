"""Every trade of the seed's table (cTRequest / soapCardTrade / the SMS trades): consume,
recharge, points accumulate and consume, their cancels, the balance and points queries, and
the 0400 reversal (``recharge.kkt.reversals``).

Order of checks (docs/PROTOCOL.md): terminal (70/60) → CARDNO (01) → REQID replay → amount
(02) → ITEMCODE (00) → STANCE_REV (06) → card (05) → who may serve it (52) → state and dates
→ card kind (20 31 32) → password (07) → test mode (68) → the original of a cancel → duplicate
(12) → limits (09 67 58, ``recharge.kkt.limits``) → the ledger → journal and Stance, 11. A
refusal writes nothing but the wrong-password counter (and the REQID memory). A query without
REQID reads its card without the row lock; its password check is ``passwords.check_unlocked``,
and when that cannot decide the query runs again under the card's row lock.

On the group-commit path (``Config.lane``, what the channels use) a trade is an item of the
``TRADES`` group, and concurrent trades share one transaction and one commit
(``recharge.ledger.group_commit``); every answer is given after that commit. ``run_trades`` runs a
batch in rounds of distinct cards (``_round``: a card's second trade, a terminal's second recharge,
a test-mode trade wait for a later round, which sees what the earlier ones did); each trade's
terminal and card number are looked up once per run of the batch (``_Where``). A round locks its
cards (in card-number order; the first round's lock carries the batch's BEGIN: ``TRADES`` is a
``begins`` group), then reads them with its duplicate flags and daily counts in one statement after
those locks (``_read_ahead``, ``recharge.kkt.rounds``), checks each trade on its own exactly as alone
(``_plan``: the password under the card's row lock, held to the batch's commit, so parallel
guesses still take effect one at a time), then creates the round's transfers in one statement and
journals its trades in one statement (``_complete``). A refusal is the item's answer; a trade that
fails (a defect, an SQL error) fails only its caller, and the batch runs again without it. A
caller already inside a transaction (the SMS cardholder path holds the card) runs its trade
there, alone, through the same ``_plan`` and ``_complete``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import asyncpg

from recharge import metrics
from recharge.config import Settings
from recharge.context import Busy, DatabaseUnavailable
from recharge.db import unavailable
from recharge.kkt import checks, gateway, journal, limits, moves, passwords, reference, reversals, rounds
from recharge.kkt.gateway import Terminal
from recharge.kkt.messages import SHANGHAI, Config, Refused, TradeRequest, TradeResult
from recharge.kkt.table import CARD_KIND_FAMILIES, REVERSAL, TRADE_TYPES, TradeKind, kind_of
from recharge.kkt.transaction import Db, in_transaction, in_transaction_already, without_transaction
from recharge.ledger import transfers as ledger
from recharge.ledger.group_commit import Group, ItemFailed

_ITEM_RE = re.compile(r"[0-9]{3,8}")
_UNREMEMBERED = ("01", "70", "60")  # refusals that identify the request too little to remember it


async def trade(db: Db, req: TradeRequest, cfg: Config) -> TradeResult:
    """Run one trade of the seed's table; never raises for a business refusal."""
    kind = kind_of(req.trade_type, req.trade_mode)
    if kind is None:
        result = TradeResult("03" if req.trade_type not in TRADE_TYPES else "04")
    elif not cfg.settings.kkt_gateway_open:
        result = TradeResult("51")
    elif cfg.lane is not None and not in_transaction_already(db):
        result = await _on_lane(TradeItem(req, kind, cfg))
    elif kind.query and not req.req_id:
        result = await _query(db, req, kind, cfg)
    else:
        result = await in_transaction(db, lambda conn: _trade(conn, req, kind, cfg), cfg.settings)
    metrics.child(metrics.KKT_TRADES, "cTRequest", result.code).inc()
    return result


@dataclass(frozen=True, slots=True)
class TradeItem:
    """A trade handed to the group commit: the request, its kind of the table, the call's Config."""

    req: TradeRequest
    kind: TradeKind
    cfg: Config


@dataclass(frozen=True, slots=True)
class _Planned:
    """A trade past its checks: the transfer still to create (None: nothing to move, or moved
    already), the refusal when its debit cannot pay, and its journal entry."""

    entry: journal.Entry
    asked: TradeKind  # the request's kind (a refusal's names)
    transfer: ledger.NewTransfer | None = None
    short: str = ""


async def _on_lane(item: TradeItem) -> TradeResult:
    """The trade's answer once its batch has committed; an unreachable database is ``Busy``."""
    assert item.cfg.lane is not None
    try:
        return await item.cfg.lane.submit(TRADES, item)
    except Busy:
        raise
    except Exception as exc:
        if unavailable(exc):
            raise DatabaseUnavailable(type(exc).__name__) from exc
        raise


@dataclass(frozen=True, slots=True)
class _Where:
    """A trade's terminal and card number as its checks find them (the 16-digit number, an 8-digit
    one expanded with the terminal's merchant), looked up once per run of a batch; ``refused``: the
    code the terminal's check (70 60) or the card number's (01) answered instead."""

    terminal: Terminal | None
    card_no: str = ""
    refused: str = ""

    def key(self, req: TradeRequest) -> str:
        """The card the trade names (a round's key); its raw text when it names none."""
        return "?" + (req.card_no or "") if self.refused else self.card_no


async def _where(conn: asyncpg.Connection, req: TradeRequest, settings: Settings) -> _Where:
    try:
        terminal = await gateway.terminal(conn, req.terminal_code, req.terminal_kinds, settings)
    except Refused as refusal:
        return _Where(None, refused=refusal.code)
    try:
        return _Where(terminal, checks.card_no(req.card_no, terminal.merchant_code))
    except Refused as refusal:
        return _Where(terminal, refused=refusal.code)


def _round(items: list[TradeItem], waiting: list[int], keys: list[str]) -> tuple[list[int], list[int]]:
    """The trades of ``waiting`` that go in this round, and the ones left for later: one trade per
    card (``keys``), per terminal for the trades its daily recharge limit counts, and a test-mode
    trade alone (its merchant's daily count)."""
    now: list[int] = []
    later: list[int] = []
    cards: set[str] = set()
    terminals: set[str] = set()
    for k in waiting:
        req, kind = items[k].req, items[k].kind
        card = keys[k]
        terminal = req.terminal_code if not kind.query and kind.kind != "consume" else None
        if card in cards or (terminal is not None and terminal in terminals) or (req.test_mode and now):
            later.append(k)
        elif now and items[now[0]].req.test_mode:
            later.append(k)
        else:
            now.append(k)
        cards.add(card)
        if terminal is not None:
            terminals.add(terminal)
    return now, later


async def run_trades(conn: asyncpg.Connection, items: list[TradeItem]) -> list[TradeResult]:
    """The ``TRADES`` group's batch function: a batch's trades in rounds of distinct cards, each
    round's checks one trade after the other (card row locks held to the commit), then its
    transfers in one statement and its journal rows in one statement. A query whose unlocked
    password check cannot decide runs again in the next round under the card's row lock."""
    results: list[TradeResult | None] = [None] * len(items)
    under_lock: set[int] = set()
    waiting = list(range(len(items)))
    wheres = [await _where(conn, item.req, item.cfg.settings) for item in items]
    keys = [where.key(item.req) for where, item in zip(wheres, items, strict=True)]
    while waiting:
        now, waiting = _round(items, waiting, keys)
        again = await _run_round(conn, items, now, under_lock, results, wheres)
        under_lock.update(again)
        waiting = sorted(waiting + again)
    return [r for r in results if r is not None]


async def _run_round(
    conn: asyncpg.Connection, items: list[TradeItem], now: list[int], under_lock: set[int],
    results: list[TradeResult | None], wheres: list[_Where],
) -> list[int]:
    """One round: fills ``results`` of ``now``; answers the trades to run again under the lock."""
    planned: dict[int, _Planned] = {}
    remember: list[int] = []
    again: list[int] = []
    locks = {k: k in under_lock or not (items[k].kind.query and not items[k].req.req_id) for k in now}
    ahead = await _read_ahead(conn, items, wheres, now, locks)
    for k in now:
        item = items[k]
        try:
            outcome, kept = await _plan(conn, item.req, item.kind, item.cfg, locks[k], ahead, wheres[k])
        except passwords.Contended:
            again.append(k)
            continue
        except Exception as exc:
            raise _failed(k, exc) from exc
        if isinstance(outcome, _Planned):
            planned[k] = outcome
        else:
            results[k] = outcome
        if kept:
            remember.append(k)
    for k, result in zip(planned, await _complete(conn, list(planned.values())), strict=True):
        if result is None:  # the journal's guard found the card changed: under the lock next round
            again.append(k)
            remember = [r for r in remember if r != k]
        else:
            results[k] = result
    for k in remember:
        try:
            await journal.remember(conn, items[k].req, results[k])  # type: ignore[arg-type]
        except Exception as exc:
            raise _failed(k, exc) from exc
    return again


@dataclass(slots=True)
class _Ahead:
    """What a round of a batch read for its trades' checks in one statement each: the cards (each
    taken once), and the duplicate flags and daily counts read after the cards were locked."""

    now: dt.datetime
    cards: checks.KnownCards
    figures: limits.Figures


async def _read_ahead(conn: asyncpg.Connection, items: list[TradeItem], wheres: list[_Where], now: list[int],
                      locks: dict[int, bool]) -> _Ahead:
    """The round's reads (``rounds``): its cards locked — the first round's with the batch's BEGIN —,
    then the cards and the figures of the trades whose limits are checked, in one statement."""
    at = dt.datetime.now(dt.UTC)
    settings = items[now[0]].cfg.settings
    wanted: list[rounds.Wanted] = []
    for k in now:
        item, where = items[k], wheres[k]
        if where.terminal is None or where.refused:  # the trade's own checks refuse it: nothing to read
            continue
        terminal, card_no = where.terminal, where.card_no
        try:
            amount, _, _ = _fields(item.req, item.kind, item.cfg)
        except Refused:
            continue
        plain = not item.kind.query and item.kind.original is None and item.kind is not REVERSAL
        asking = (terminal.code, item.req.trade_type, item.req.trade_mode, amount) if (
            plain and item.cfg.settings is settings) else None
        wanted.append(rounds.Wanted(card_no, terminal.merchant_id, item.kind, locks[k], asking))
    await rounds.lock(conn, [w.card_no for w in wanted if w.lock], begin=not conn.is_in_transaction())
    cards, figures = await rounds.read(conn, wanted, at, settings)
    return _Ahead(at, cards, figures)


def _failed(index: int, exc: Exception) -> Exception:
    """A trade's failure: only its caller hears of it (``ItemFailed``), unless it is the connection's
    or the database's (the whole batch fails, or is retried)."""
    if isinstance(exc, Busy | asyncpg.InterfaceError) or unavailable(exc):
        return exc
    return ItemFailed(index, exc)


TRADES: Group[TradeItem, TradeResult] = Group("kkt_trades", run_trades, hot=True, begins=True)


async def _query(db: Db, req: TradeRequest, kind: TradeKind, cfg: Config) -> TradeResult:
    """A balance or points query moves nothing: the card read unlocked, then one statement
    that reads the balances, takes the Stance and journals it. A password check that only
    the card's row lock can decide runs the query again in a transaction."""
    try:
        return await without_transaction(db, lambda conn: _trade(conn, req, kind, cfg, lock=False))
    except passwords.Contended:
        return await in_transaction(db, lambda conn: _trade(conn, req, kind, cfg), cfg.settings)


async def _trade(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, cfg: Config, lock: bool = True
) -> TradeResult:
    """One trade on its own (``run_trades`` is the batch's form of the same steps)."""
    outcome, kept = await _plan(conn, req, kind, cfg, lock)
    if isinstance(outcome, _Planned):
        (result,) = await _complete(conn, [outcome])
        if result is None:
            raise passwords.Contended()
    else:
        result = outcome
    if kept:
        await journal.remember(conn, req, result)
    return result


async def _plan(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, cfg: Config, lock: bool,
    ahead: _Ahead | None = None, where: _Where | None = None,
) -> tuple[TradeResult | _Planned, bool]:
    """The trade's checks: its answer (a refusal, a replay) or what is left to do; and whether
    its REQID remembers the answer. ``where``: its terminal and card number, looked up by its batch."""
    card_no = ""
    try:
        if where is None:
            where = await _where(conn, req, cfg.settings)
        if where.terminal is None or where.refused:
            raise Refused(where.refused)
        terminal, card_no = where.terminal, where.card_no
        replay = await journal.replay(conn, req, terminal)
        if replay is not None:
            return replay, False
        return await _trade_checked(conn, req, kind, cfg, terminal, card_no, lock, ahead), bool(req.req_id)
    except Refused as refusal:
        return _refusal(refusal.code, card_no, kind), bool(req.req_id) and refusal.code not in _UNREMEMBERED


def _refusal(code: str, card_no: str, kind: TradeKind) -> TradeResult:
    return TradeResult(code, card_no=card_no, trade_name_zh=kind.name_zh, trade_name_en=kind.name_en)


async def _complete(conn: asyncpg.Connection, planned: list[_Planned]) -> list[TradeResult | None]:
    """Create the planned transfers in one statement, journal the trades whose transfer was
    created (or that move nothing) in one statement; a refusal for each whose debit could not
    pay; None for a journal entry whose guard failed."""
    moving = [p for p in planned if p.transfer is not None]
    created = dict(zip((id(p) for p in moving), await moves.create(conn, [p.transfer for p in moving
                                                                             if p.transfer is not None]),
                       strict=True))
    going = [p for p in planned if created.get(id(p), True)]
    journaled = dict(zip((id(p) for p in going), await journal.finish_all(conn, [p.entry for p in going]),
                         strict=True))
    return [journaled[id(p)] if id(p) in journaled else _refusal(p.short, p.entry.card_no, p.asked)
            for p in planned]


def _fields(req: TradeRequest, kind: TradeKind, cfg: Config) -> tuple[int, str | None, str | None]:
    """(amount in cents, ITEMCODE, STANCE_REV) of a trade, checked (02, 00, 06)."""
    amount = checks.amount(req.amount, cfg) if kind.needs_amount and kind.original is None else 0
    if kind.original is not None and req.amount:
        amount = checks.amount(req.amount, cfg)  # a cancel may repeat the original's amount
    item_code = (req.item_code or "").strip() or None
    if item_code is not None and not _ITEM_RE.fullmatch(item_code):
        raise Refused("00")
    stance_rev = (req.stance_rev or "").strip() or None
    undoes = kind.original is not None or kind is REVERSAL
    if kind.original is not None and stance_rev is None:
        raise Refused("06")
    if undoes and stance_rev is not None and not checks.STANCE_RE.fullmatch(stance_rev):
        raise Refused("06")
    return amount, item_code, stance_rev


async def _trade_checked(
    conn: asyncpg.Connection, req: TradeRequest, kind: TradeKind, cfg: Config, terminal: Terminal, card_no: str,
    lock: bool, ahead: _Ahead | None,
) -> _Planned:
    now = ahead.now if ahead is not None else dt.datetime.now(dt.UTC)
    amount, item_code, stance_rev = _fields(req, kind, cfg)
    card = await checks.trade_card(conn, card_no, kind, terminal.merchant_id, lock,
                                   ahead.cards if ahead is not None else None)
    if kind is REVERSAL:
        return _Planned(await reversals.reverse(conn, req, cfg, terminal, card, stance_rev, now), kind)
    if kind.original is None:
        checks.check_accepted(card)  # a cancel names the merchant's own trade (64), made when accepted
    checks.check_card_usable(card, now.astimezone(SHANGHAI).date())
    _check_family(kind, card)
    guard = await _check_password(conn, req, card, cfg, lock)
    if req.test_mode:
        await _check_test_mode(conn, terminal, cfg, now)
    names = await _trade_names(conn, kind, terminal, item_code, cfg.settings)
    if kind.query:
        return _Planned(journal.entry(req, kind, terminal, card_no, 0, 0, item_code, names, None, None,
                                      guard=guard), kind)
    if kind.original is not None:
        original = await reversals.cancellable(conn, kind, cfg, terminal, card, stance_rev or "", amount, now)
        await limits.check(conn, card, terminal, req, kind, original["amount_cents"], cfg, now)
        transfer_id = await reversals.undo(conn, original, card)
        return _Planned(journal.entry(req, kind, terminal, card_no, original["amount_cents"], original["points"],
                                      item_code, names, transfer_id, original["id"]), kind)
    await limits.check(conn, card, terminal, req, kind, amount, cfg, now, ahead.figures if ahead else None)
    points, transfer, short = await moves.plan(conn, kind, terminal, card, amount, cfg.settings)
    return _Planned(journal.entry(req, kind, terminal, card_no, amount, points, item_code, names,
                                  None if transfer is None else transfer.id, None), kind, transfer, short)


def _check_family(kind: TradeKind, card: asyncpg.Record) -> None:
    """20 a points card on a stored-value trade, 31/32 a card without the trade's family."""
    if kind.family not in CARD_KIND_FAMILIES[card["kind"]]:
        if card["kind"] == "points":
            raise Refused("20")
        raise Refused("31" if kind.family == "sv" else "32")


async def _check_password(
    conn: asyncpg.Connection, req: TradeRequest, card: asyncpg.Record, cfg: Config, lock: bool
) -> str | None:
    """07 unless the password is right; the guard the journal statement needs on the fast path."""
    if req.skip_password:
        return None
    if lock:
        await passwords.check_locked(conn, card, req.password, cfg)
        return None
    return await passwords.check_unlocked(conn, card, req.password, cfg)


async def _check_test_mode(conn: asyncpg.Connection, terminal: Terminal, cfg: Config, now: dt.datetime) -> None:
    """68: a test-mode key's merchant has made its daily number of trades."""
    count = await conn.fetchval(
        "SELECT count(*) FROM kkt_trades WHERE merchant_id = $1 AND created_at >= $2",
        terminal.merchant_id, checks.day_start(now),
    )
    if count >= cfg.settings.kkt_test_mode_daily_max:
        raise Refused("68")


async def _trade_names(
    conn: asyncpg.Connection, kind: TradeKind, terminal: Terminal, item_code: str | None, settings: Settings
) -> tuple[str, str]:
    """The trade's names (Chinese, English): the merchant's name for its ITEMCODE, if any."""
    if item_code is not None:
        merchant_id = terminal.merchant_id

        async def load() -> str | None:
            return await conn.fetchval(  # type: ignore[no-any-return]
                "SELECT name FROM service_codes WHERE merchant_id = $1 AND item_code = $2", merchant_id, item_code
            )

        service = await reference.cached(("service", merchant_id, item_code), settings, load)
        if service:
            return service, service
    return kind.name_zh, kind.name_en
