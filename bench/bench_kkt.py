"""Benchmark of the KaKaTong REST service, each figure a ratio of rates measured in one run.

- ``kkt_consume_ratio_vs_pgbench``: stored-value consumes (``cTRequest`` 0022/1, each a
  durable transaction: card lock, password check, ledger transfer, Stance, journal; commit
  with synchronous_commit as configured) per second with ``CONCURRENCY`` keep-alive clients,
  divided by pgbench's TPC-B-like TPS with as many clients on the same PostgreSQL (scale 16:
  at least the client count, as pgbench asks).
  Each client has its own merchant and terminal (as many merchants trade at once in
  production) and rotates over ``CARDS_PER_CLIENT`` cards with a new amount per request, so
  neither the duplicate rule (12) nor the default daily count (67) triggers.
- ``kkt_query_ratio_vs_hello``: balance queries (0011/0; they also get a Stance and are
  journalled, as the seed shows) per second divided by a hello-world route mounted on the
  same aiohttp application (same middleware), same clients.

Before the timed runs every card answers one balance query, so the figures are the steady
state: the server memoises a verified (stored hash, password) pair, and only a card's first
trade in a process pays the ~1 ms of PBKDF2 (``kkt_password_hash_iterations``). Money
trades take 6 statements (BEGIN, card lock, limits, one ledger statement, one journal
statement, COMMIT), a balance query 2 (card, journal); license keys and terminals come from
the reference cache (``kkt_reference_cache_ttl_s``).

The server (the real HTTP app) runs in its own process, the client in another.
With ``DATABASE_URL`` set it uses that server, else an embedded PostgreSQL in
``var/bench-pgdata``. ``python -m bench.bench_kkt`` prints the figures. About 40 seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing as mp
import secrets
import time
from typing import Any

from bench.bench_dd import _client, _pgbench_init, _pgbench_tps, _start, bench_world

CONCURRENCY = 16
CARDS_PER_CLIENT = 100  # trades rotate over them: each stays under the daily count (67)
SECONDS = 5.0
PASSWORD_MD5 = hashlib.md5(b"111111").hexdigest()



def _server_main(settings: Any, dsn: str, ports: Any) -> None:
    import uvloop
    from aiohttp import web

    async def main() -> None:
        from http_api.app import build_app
        from recharge import db
        from recharge.context import Platform
        from recharge.keys import load_keys

        pool = await db.create_pool(dsn, settings)
        ctx = Platform(settings=settings, pool=pool, keys=load_keys(settings.resolved_key_file), dsn=dsn)
        app = build_app(ctx)

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app.router.add_get("/bench/hello", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    uvloop.run(main())


def _client_main(port: int, kind: str, clients: list[dict[str, str]], seconds: float, results: Any) -> None:
    import aiohttp
    import uvloop

    async def worker(session: aiohttp.ClientSession, who: dict[str, str], deadline: float) -> tuple[int, int]:
        done = bad = 0
        card_list = who["cards"].split(",")
        amount = 1 + secrets.randbelow(10**4) * 1000  # fresh amounts: never the duplicate rule (12)
        while time.perf_counter() < deadline:
            if kind == "hello":
                url = f"http://127.0.0.1:{port}/bench/hello"
            else:
                trade = "TRADETYPE=0022&TRADEMODE=1" if kind == "consume" else "TRADETYPE=0011&TRADEMODE=0"
                url = (f"http://127.0.0.1:{port}/s/get?method=cTRequest&{trade}&LICENSEKEY={who['key']}"
                       f"&POSCODE={who['terminal']}&CARDNO={card_list[amount % len(card_list)]}"
                       f"&CARDPWD={PASSWORD_MD5}&AMOUNT={amount}")
                amount += 1
            async with session.get(url) as resp:
                body = await resp.text()
            if kind == "hello" or "<PayInForm>11</PayInForm>" in body:
                done += 1
            else:
                bad += 1
        return done, bad

    async def warm(session: aiohttp.ClientSession, who: dict[str, str]) -> None:
        """One balance query per card: the server's memoised password checks are warm."""
        for card in who["cards"].split(","):
            url = (f"http://127.0.0.1:{port}/s/get?method=cTRequest&TRADETYPE=0011&TRADEMODE=0"
                   f"&LICENSEKEY={who['key']}&POSCODE={who['terminal']}&CARDNO={card}&CARDPWD={PASSWORD_MD5}")
            async with session.get(url) as resp:
                await resp.read()

    async def main() -> tuple[float, int]:
        connector = aiohttp.TCPConnector(limit=len(clients))
        async with aiohttp.ClientSession(connector=connector) as session:
            if kind == "query":  # the first timed run over the cards
                await asyncio.gather(*(warm(session, who) for who in clients))
            for who in clients[:2]:  # warm up the connections and the server's caches
                await worker(session, who, time.perf_counter() + 0.2)
            started = time.perf_counter()
            deadline = started + seconds
            counts = await asyncio.gather(*(worker(session, who, deadline) for who in clients))
            elapsed = time.perf_counter() - started
        return sum(c[0] for c in counts) / elapsed, sum(c[1] for c in counts)

    results.put(uvloop.run(main()))


async def _prepare(dsn: str, keys: Any) -> list[dict[str, str]]:
    import asyncpg

    from app.demo import fund_recharge_fund
    from recharge import db
    from recharge.kkt import cards
    from recharge.ledger import transfers as ledger

    conn = await asyncpg.connect(dsn)
    clients = []
    try:
        await db.migrate(conn)
        pepper = cards.password_pepper(keys)
        for i in range(CONCURRENCY):
            code = f"{7000 + i}"
            async with conn.transaction():
                await cards.upsert_merchant(conn, code, f"bench {i}", actor="bench")
                terminal = f"{code}0001"
                await cards.upsert_terminal(conn, terminal, code, "pos", actor="bench")
                key = f"BENCHKEY{code}{secrets.token_hex(8)}"
                await cards.upsert_license_key(conn, key, code, actor="bench")
                merchant_id = await cards.merchant_id_of(conn, code)
                fund = await fund_recharge_fund(conn, merchant_id, 10**12, f"bench:fund:{code}")
                card_list = []
                for seq in range(1, CARDS_PER_CLIENT + 1):
                    card = cards.card_no_for(code, seq)
                    await conn.execute(
                        "INSERT INTO cards (card_no, merchant_id, kind, state, password_hash)"
                        " VALUES ($1,$2,'both','active',$3)",
                        card, merchant_id, cards.hash_password(PASSWORD_MD5, pepper, 1000),
                    )
                    purse = await ledger.ensure_account(conn, ledger="CNY", kind=ledger.AccountKind.CARD_PURSE,
                                                        card_no=card)
                    load = ledger.NewTransfer(f"bench:load:{card}", fund, purse, 10**10)
                    (await ledger.create_transfers(conn, [load]))[0].check("load")
                    card_list.append(card)
            clients.append({"key": key, "terminal": terminal, "cards": ",".join(card_list)})
    finally:
        await conn.close()
    return clients


def run() -> dict[str, float]:
    from recharge.config import load_settings

    ctx = mp.get_context("spawn")
    with bench_world("recharge_bench_kkt") as world:
        dsn, keys = world.dsn, world.keys
        settings = load_settings(None).replace(
            database_url=dsn, data_dir=world.data_dir, key_file=world.key_file,
            pool_min_size=CONCURRENCY, pool_max_size=CONCURRENCY + 4,
            kkt_per_txn_limit_cents=10**9,
        )
        clients = asyncio.run(_prepare(dsn, keys))
        server, port = _start(ctx, _server_main, settings, dsn)
        try:
            hello_rate, _ = _client(ctx, _client_main, port, "hello", clients, SECONDS)
            query_rate, query_bad = _client(ctx, _client_main, port, "query", clients, SECONDS)
            consume_rate, consume_bad = _client(ctx, _client_main, port, "consume", clients, SECONDS)
        finally:
            server.terminate()
        _pgbench_init(world.bin_dir, world.pgbench_url, CONCURRENCY)
        tps = _pgbench_tps(world.bin_dir, world.pgbench_url, CONCURRENCY)
    if query_bad or consume_bad:
        raise RuntimeError(f"trades refused during the benchmark: queries {query_bad}, consumes {consume_bad}")
    return {
        "kkt_consume_ratio_vs_pgbench": consume_rate / tps,
        "kkt_query_ratio_vs_hello": query_rate / hello_rate,
        "kkt_consumes_per_s": consume_rate,
        "kkt_queries_per_s": query_rate,
        "kkt_hello_per_s": hello_rate,
        "kkt_pgbench_tpcb_tps": tps,
    }


if __name__ == "__main__":
    for figure, value in run().items():
        print(f"{figure}: {value:.3f}")
