"""The seed's trade table (seed 002 cTRequest): TRADETYPE/TRADEMODE → what the trade is.

Each ``TradeKind`` names its kind, its family (``sv`` stored value, ``pts`` points, ``rev``
the 0400 reversal), its Chinese and English names, and for a cancel the (type, mode) it
cancels. ``CARD_KIND_FAMILIES`` says which families a card kind takes (20/31/32 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TradeKind:
    kind: str
    family: str  # "sv" stored value, "pts" points, "rev" reversal
    name_zh: str
    name_en: str
    original: tuple[str, str] | None = None  # a cancel: the (type, mode) it cancels
    query: bool = False
    needs_amount: bool = True


TRADES: dict[tuple[str, str], TradeKind] = {
    ("0022", "1"): TradeKind("consume", "sv", "储值消费", "Stored-value consume"),
    ("0022", "0"): TradeKind("consume_cancel", "sv", "消费撤销", "Consume cancel", ("0022", "1")),
    **{
        (t, "0"): TradeKind("recharge", "sv", "储值充值", "Stored-value recharge")
        for t in ("1100", "1101", "1102", "1103")
    },
    **{
        (t, "1"): TradeKind("recharge_cancel", "sv", "充值撤销", "Recharge cancel", (t, "0"))
        for t in ("1100", "1101", "1102", "1103")
    },
    ("0033", "0"): TradeKind("points_add", "pts", "积分累加", "Points accumulate"),
    ("0033", "1"): TradeKind("points_add_cancel", "pts", "累加撤销", "Points accumulate cancel", ("0033", "0")),
    ("0034", "1"): TradeKind("points_use", "pts", "积分消费", "Points consume"),
    ("0034", "0"): TradeKind("points_use_cancel", "pts", "积分消费撤销", "Points consume cancel", ("0034", "1")),
    ("0011", "0"): TradeKind("balance_query", "sv", "储值查询", "Balance query", query=True, needs_amount=False),
    ("0011", "1"): TradeKind("points_query", "pts", "积分查询", "Points query", query=True, needs_amount=False),
}
REVERSAL_TYPE = "0400"
REVERSAL = TradeKind("reversal", "rev", "交易冲正", "Reversal", needs_amount=False)
KIND_NAMES = {t.kind: (t.name_zh, t.name_en) for t in (*TRADES.values(), REVERSAL)}
KIND_NAMES["activation_recharge"] = ("领卡充值", "Activation recharge")
TRADE_TYPES = {t for t, _ in TRADES} | {REVERSAL_TYPE}
CARD_KIND_FAMILIES = {"sv": {"sv"}, "points": {"pts"}, "both": {"sv", "pts"}, "cpu": set()}


def kind_of(trade_type: str, trade_mode: str) -> TradeKind | None:
    """The trade a TRADETYPE/TRADEMODE pair names (0400 with any mode), None when none."""
    kind = TRADES.get((trade_type, trade_mode))
    if kind is None and trade_type == REVERSAL_TYPE:
        return REVERSAL
    return kind
