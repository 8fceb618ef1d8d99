"""``python -m chaos.client KIND …``: one chaos client process (dd, kkt, sms, order, mpay, wallet, slow).

Started by ``chaos.run``; reads world.json, journals to its own file, runs until ``--until``
(a wall-clock time), then recovers what it left unknown until ``--recover-until`` and exits.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from chaos.dd_client import DDClient
from chaos.journal import Journal
from chaos.mpay_client import MpayClient
from chaos.slow_client import SlowClient
from chaos.trade_clients import OrderClient, TradeClient
from chaos.wallet_client import WalletClient
from chaos.world import World

KINDS = ("dd", "kkt", "sms", "order", "mpay", "wallet", "slow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--until", type=float, required=True)
    parser.add_argument("--recover-until", type=float, required=True)
    parser.add_argument("--source", default="", help="the loopback address this client's proxied connections come from")
    parser.add_argument("--pace", type=float, default=0.05, help="at most this many seconds between operations")
    a = parser.parse_args(argv)
    world = World.load(a.world)
    world.source = a.source
    journal = Journal(a.journal, f"{a.kind}{a.index}")
    rng = random.Random(a.seed)
    client: DDClient | TradeClient | OrderClient | MpayClient | WalletClient | SlowClient
    if a.kind == "dd":
        client = DDClient(world, a.index, journal, rng, a.pace)
    elif a.kind in ("kkt", "sms"):
        client = TradeClient(world, a.index, journal, rng, a.pace, sms=a.kind == "sms")
    elif a.kind == "order":
        client = OrderClient(world, a.index, journal, rng, a.pace)
    elif a.kind == "mpay":
        client = MpayClient(world, a.index, journal, rng, a.pace)
    elif a.kind == "wallet":
        client = WalletClient(world, a.index, journal, rng, a.pace)
    else:
        client = SlowClient(world, a.index, journal, rng)
    try:
        client.run(a.until, a.recover_until)
    finally:
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
