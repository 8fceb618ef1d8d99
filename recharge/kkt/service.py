"""The card service as its channels see it (SPEC 3.1, seed 002): every name REST
(``http_api.kkt_rest``), SOAP (``http_api.kkt_soap``) and the SMS hook call, gathered from
the modules of ``recharge.kkt`` that implement them, so a channel imports one module.

A channel parses its wire format, calls ``authorize`` (the web gateways) and one method —
``trade``, ``activate``, ``change_password``, ``bind``, ``card_info``, ``history`` — with
plain request objects, and renders the result; it never copies a rule. Where each concern
lives: ``codes`` (return codes and texts), ``gateway`` (license, network and terminal
checks), ``trades`` and ``reversals`` (the trade table's trades, cancels and 0400),
``card_admin`` (activation, passwords, bindings, holder information), ``history``
(tSRequest), ``passwords`` (checks and lockout), ``sms_channel`` (SMS commands).
"""

from __future__ import annotations

from recharge import metrics
from recharge.kkt.card_admin import (
    HOLDER_FIELDS,
    ActivateRequest,
    BindRequest,
    InfoResult,
    PasswordRequest,
    activate,
    bind,
    card_info,
    change_password,
)
from recharge.kkt.codes import BUSY, BUSY_TEXTS, OK, TEXTS, busy_text, is_chinese, text
from recharge.kkt.gateway import License, authorize
from recharge.kkt.history import HistoryRecord, HistoryResult, history
from recharge.kkt.messages import (
    GATEWAY_TERMINAL_KINDS,
    SHANGHAI,
    SMS_TERMINAL_KINDS,
    Config,
    TradeRequest,
    TradeResult,
)
from recharge.kkt.table import TRADES
from recharge.kkt.trades import trade

__all__ = [
    "BUSY", "BUSY_TEXTS", "busy_text", "GATEWAY_TERMINAL_KINDS", "HOLDER_FIELDS", "OK", "SHANGHAI", "SMS_TERMINAL_KINDS", "TEXTS", "TRADES",
    "ActivateRequest", "BindRequest", "Config", "HistoryRecord", "HistoryResult", "InfoResult", "License",
    "PasswordRequest", "TradeRequest", "TradeResult", "activate", "authorize", "bind", "card_info",
    "change_password", "history", "is_chinese", "metrics", "text", "trade",
]
