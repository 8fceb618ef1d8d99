"""A simulated bank gateway (SPEC 6.6) for the demo and the tests: it signs a notice with the
gateway's private key and POSTs it to ``/mpay/v1/bank/notify/{gw}`` exactly as a bank would.

``rechargectl mpay bank-sim ORDER_ID --amount CENTS [--result S|F] [--gateway unionpay]``
uses the demo key in ``<data_dir>/mpay/gw_<gw>_private.pem``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

from recharge.mpay import bank
from recharge.mpay.text import SHANGHAI


def notice_form(private_key_pem: bytes, order_id: str, amount: int, result: str = "S",
                serial: str | None = None) -> dict[str, str]:
    form = {"order_id": order_id, "amount": str(amount), "result": result,
            "bank_serial": serial or "SIM" + secrets.token_hex(8).upper(),
            "paid_at": dt.datetime.now(SHANGHAI).strftime("%Y%m%d%H%M%S")}
    return dict(form, sign=bank.sign_form(private_key_pem, form))


def notify(base_url: str, gateway: str, private_key_path: Path, order_id: str, amount: int, result: str = "S",
           serial: str | None = None) -> tuple[int, str]:
    """POST one signed notice; (HTTP status, body: OK or FAIL)."""
    form = notice_form(private_key_path.read_bytes(), order_id, amount, result, serial)
    request = urllib.request.Request(f"{base_url.rstrip('/')}/mpay/v1/bank/notify/{gateway}",
                                     data=urlencode(form).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8")
