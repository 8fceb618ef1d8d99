"""Transaction history (tSRequest / soapTradeStance): a merchant's trades by terminal, card
or serial, within an optional Asia/Shanghai time range.

Exactly one of POSCODE, CARDNO, STANCE_NO may be set (00 otherwise); none lists the key's
merchant's trades. Records are limited to trades at the key's merchant or on cards it issued,
newest first, at most ``kkt_history_max_rows``. Bad times → 00, TRADETYPE ≠ 0012 → 03,
TRADEMODE ≠ 0 → 04, a serial with no trade → 61.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from recharge import metrics
from recharge.kkt import checks
from recharge.kkt.codes import OK
from recharge.kkt.gateway import License
from recharge.kkt.messages import SHANGHAI, Config, Refused
from recharge.kkt.table import KIND_NAMES
from recharge.kkt.transaction import Db, connection

_COLUMNS = "t.stance, t.card_no, t.amount_cents, t.points, t.created_at, t.terminal_code, t.kind, t.trade_name"


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    stance: str
    card_no: str
    amount_cents: int
    points: int
    trade_time: dt.datetime  # UTC; shown in Asia/Shanghai
    terminal_code: str
    kind: str
    trade_name: str

    def name(self, chinese: bool) -> str:
        if chinese and self.trade_name:
            return self.trade_name
        zh, en = KIND_NAMES.get(self.kind, ("", ""))
        return zh if chinese else en


@dataclass(frozen=True, slots=True)
class HistoryResult:
    code: str
    records: list[HistoryRecord] = field(default_factory=list)


def _is_unset(value: str | None) -> bool:
    return (value or "").strip() in ("", "0")


def parse_time(raw: str | None) -> dt.datetime | None:
    """``YYYY-MM-DD hh:mm:ss`` (or a date) in Asia/Shanghai; None when unset (0 or empty).
    ValueError when malformed or out of range (a year-1 time has no UTC equivalent)."""
    if _is_unset(raw):
        return None
    value = (raw or "").strip()
    if len(value) > 19:
        raise ValueError(value)
    try:
        parsed = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        parsed = dt.datetime.strptime(value, "%Y-%m-%d")
    try:
        return parsed.replace(tzinfo=SHANGHAI).astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(value) from None


async def history(
    db: Db, license: License, *, trade_type: str, trade_mode: str, card_no: str | None,
    terminal_code: str | None, stance_no: str | None, start: str | None, end: str | None, cfg: Config,
) -> HistoryResult:
    """Trades by one of terminal, card or serial (all unset: by the key's merchant), within
    an optional time range, limited to the key's merchant's trades and cards."""
    try:
        if not cfg.settings.kkt_gateway_open:
            raise Refused("51")
        if trade_type != "0012":
            raise Refused("03")
        if trade_mode != "0":
            raise Refused("04")
        conditions = _conditions(license, card_no, terminal_code, stance_no, start, end)
        result = await _records(db, license, conditions, cfg, by_serial=not _is_unset(stance_no))
    except Refused as refusal:
        result = HistoryResult(refusal.code)
    metrics.KKT_TRADES.labels("tSRequest", result.code).inc()
    return result


def _conditions(
    license: License, card_no_raw: str | None, terminal_code: str | None, stance_no: str | None,
    start: str | None, end: str | None,
) -> list[tuple[str, Any]]:
    """The filters a request names, as (SQL condition before its parameter, value)."""
    filters = [not _is_unset(v) for v in (card_no_raw, terminal_code, stance_no)]
    if sum(filters) > 1:
        raise Refused("00")  # the seed: query by exactly one of them
    try:
        t0, t1 = parse_time(start), parse_time(end)
    except ValueError:
        raise Refused("00") from None
    conditions: list[tuple[str, Any]] = []
    if filters[0]:
        conditions.append(("t.card_no =", checks.card_no(card_no_raw, license.merchant_code)))
    if filters[1]:
        code = (terminal_code or "").strip()
        if len(code) > 16:
            raise Refused("70")
        conditions.append(("t.terminal_code =", code))
    if filters[2]:
        stance = (stance_no or "").strip()
        if not checks.STANCE_RE.fullmatch(stance):
            raise Refused("61")
        conditions.append(("t.stance =", stance))
    if t0 is not None:
        conditions.append(("t.created_at >=", t0))
    if t1 is not None:
        conditions.append(("t.created_at <=", t1))
    return conditions


async def _records(
    db: Db, license: License, conditions: list[tuple[str, Any]], cfg: Config, by_serial: bool
) -> HistoryResult:
    where = ["(t.merchant_id = $1 OR c.merchant_id = $1)"]
    where += [f"{condition} ${i}" for i, (condition, _) in enumerate(conditions, start=2)]
    args = [license.merchant_id, *(value for _, value in conditions), cfg.settings.kkt_history_max_rows]
    sql = (
        f"SELECT {_COLUMNS} FROM kkt_trades t JOIN cards c ON c.card_no = t.card_no WHERE " + " AND ".join(where)
        + f" ORDER BY t.created_at DESC, t.id DESC LIMIT ${len(args)}"
    )
    async with connection(db) as conn:
        rows = await conn.fetch(sql, *args)
    if not rows and by_serial:
        return HistoryResult("61")
    return HistoryResult(OK, [HistoryRecord(*r) for r in rows])
