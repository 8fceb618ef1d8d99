"""SPEC 6.7's status matrix, cell by cell, against the table as the SPEC prints it."""

from __future__ import annotations

import pytest

from recharge.mpay import matrix
from recharge.mpay.codes import Refused

# The SPEC's table, transcribed: row → cells for normal, locked: suspended, locked: lost, frozen,
# pending_closure. "✓" allowed, "✗" refused with the status code, else the channels allowed.
SPEC_TABLE = """
recharge            | ✓ | ✗       | ✗   | ✗ | ✗
payment             | ✓ | ✗       | ✗   | ✗ | web
hf                  | ✓ | web,stk | ✗   | ✗ | web
withdrawal          | ✓ | web     | web | ✗ | web
sms_stk             | ✓ | stk     | ✗   | ✓ | ✗
pay_reset_close     | ✓ | ✗       | ✗   | ✗ | ✗
query_login         | ✓ | ✓       | ✓   | ✓ | ✓
refund_login_change | ✓ | ✓       | ✓   | ✓ | ✓
pay_change_security | ✓ | web     | web | ✓ | web
bind_card           | ✓ | web     | web | ✗ | web
alias_change        | ✓ | ✓       | ✓   | ✓ | ✗
reset_upgrade       | ✓ | ✗       | ✗   | ✓ | ✗
"""
STATES = [("normal", None), ("locked", "suspended"), ("locked", "lost"), ("frozen", None), ("pending_closure", None)]
STATUS_CODE = {"locked": "2004", "frozen": "2005", "pending_closure": "2006"}
CHANNELS = ("sms", "web", "stk", "cs", "ivr", "counter", "merchant")
CELLS = [(row.split("|")[0].strip(), i, cell.strip())
         for row in SPEC_TABLE.strip().splitlines() for i, cell in enumerate(row.split("|")[1:])]


def outcome(operation: str, state: int, channel: str) -> str:
    status, reason = STATES[state]
    try:
        matrix.require({"status": status, "lock_reason": reason}, operation, channel)
    except Refused as refused:
        return refused.code
    return "ok"


@pytest.mark.parametrize(("operation", "state", "cell"), CELLS)
def test_every_cell_of_the_status_matrix(operation: str, state: int, cell: str) -> None:
    status = STATES[state][0]
    for channel in CHANNELS:
        if cell == "✓":
            expected = "ok"
        elif cell == "✗":
            expected = STATUS_CODE[status]
        else:
            expected = "ok" if channel in cell.split(",") else ("2008" if channel == "sms" else "1004")
        assert outcome(operation, state, channel) == expected, (operation, status, channel)


def test_a_closed_account_answers_2007_everywhere() -> None:
    for operation in matrix.ROWS:
        with pytest.raises(Refused) as refused:
            matrix.require({"status": "closed", "lock_reason": None}, operation, "web")
        assert refused.value.code == "2007"
