"""Connecting the rooms: where one room's rules must reach a room below it that may not import it, the lower
room keeps a list of hooks and the composition root fills it, once per process (``serve`` and every
``rechargectl`` command alike):

- the mobile payment account's closure asks the SIM wallet whether it is open (SPEC 6.6 Close: ``2011``);
- a registry status change runs the SIM wallet's 销号 handling in its transaction (SPEC 7.7);
- a bank recharge into the wallet becomes the wallet's waiting load (SPEC 6.6, 7.3's bank path).

Imports are inside ``connect``: ``serve`` chooses Prometheus's multiprocess mode before anything imports
the metrics."""

from __future__ import annotations


def connect() -> None:
    from recharge.mpay import bank, closure, events
    from recharge.wallet import bank_loads, closing, wallets

    if wallets.is_open not in closure.WALLET_CHECKS:
        closure.WALLET_CHECKS.append(wallets.is_open)
    if closing.on_number_event not in events.NUMBER_EVENT_HOOKS:
        events.NUMBER_EVENT_HOOKS.append(closing.on_number_event)
    if bank_loads.SEAM not in bank.WALLET:
        bank.WALLET.append(bank_loads.SEAM)
