"""The status matrix of SPEC 6.7: which operation an account's status allows on which channel.

``require(account, operation, channel)`` raises the cell's refusal: ``2004`` (locked),
``2005`` (frozen), ``2006`` (pending closure), ``2007`` (closed), or ``1004`` for a channel
missing from a "web" / "STK only" cell (SMS answers ``2008`` there: its number is not
normal). Channels: ``sms``, ``web``, ``stk``, ``cs`` (10086 agent), ``ivr``, ``counter``,
``merchant``, ``ops``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recharge.mpay.codes import Refused

# Columns: normal, locked: suspended, locked: lost, frozen, pending_closure.
# "Y" allowed, "N" refused with the status's code, otherwise the channels that may.
ROWS: dict[str, tuple[str, str, str, str, str]] = {
    "recharge": ("Y", "N", "N", "N", "N"),  # and wallet load
    "payment": ("Y", "N", "N", "N", "web"),
    "hf": ("Y", "web,stk", "N", "N", "web"),
    "withdrawal": ("Y", "web", "web", "N", "web"),
    "sms_stk": ("Y", "stk", "N", "Y", "N"),
    "pay_reset_close": ("Y", "N", "N", "N", "N"),
    "query_login": ("Y", "Y", "Y", "Y", "Y"),  # queries, login, 10086 login reset
    "refund_login_change": ("Y", "Y", "Y", "Y", "Y"),
    "pay_change_security": ("Y", "web", "web", "Y", "web"),
    "bind_card": ("Y", "web", "web", "N", "web"),
    "alias_change": ("Y", "Y", "Y", "Y", "N"),
    "reset_upgrade": ("Y", "N", "N", "Y", "N"),  # M, website login reset, GX, real-name update
}
_STATUS_CODE = {"locked": "2004", "frozen": "2005", "pending_closure": "2006"}


def column(account: Mapping[str, Any]) -> int:
    status = account["status"]
    if status == "normal":
        return 0
    if status == "locked":
        return 2 if account["lock_reason"] == "lost" else 1
    return 3 if status == "frozen" else 4


def require(account: Mapping[str, Any], operation: str, channel: str) -> None:
    """Raise the refusal of 6.7's cell for this account, operation and channel, if any."""
    if account["status"] == "closed":
        raise Refused("2007")
    cell = ROWS[operation][column(account)]
    if cell == "Y":
        return
    if cell == "N":
        raise Refused(_STATUS_CODE[account["status"]])
    if channel not in cell.split(","):
        raise Refused("2008" if channel == "sms" else "1004")
