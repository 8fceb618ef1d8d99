"""The 14 banks of SPEC 6.2 (code → name in texts) and the gateway each is reached through."""

from __future__ import annotations

BANKS = {
    "ICBC": "中国工商银行", "CCB": "中国建设银行", "BOC": "中国银行", "ABC": "中国农业银行", "CMB": "招商银行",
    "BOCOM": "交通银行", "PSBC": "中国邮政储蓄银行", "SPDB": "浦发银行", "CITIC": "中信银行", "CMBC": "中国民生银行",
    "CEB": "中国光大银行", "CIB": "兴业银行", "GDB": "广东发展银行", "HXB": "华夏银行",
}
GATEWAYS = ("icbc", "unionpay")


def gateway_of(bank: str) -> str:
    """``ICBC`` through its own gateway ``icbc``, every other bank through ``unionpay``."""
    return "icbc" if bank == "ICBC" else "unionpay"
