"""The platform under test and the faults done to it: serve, its database, the proxy, the clients.

``Harness`` starts ``rechargectl serve`` (embedded PostgreSQL in the run's data folder, or a
database of its own on the ``DATABASE_URL`` server), provisions the world, starts the proxy
and the client processes, then carries out the fault schedule and measures each recovery:
from the fault to the moment every channel answers a probe with a definite answer again.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import fixtures
from app.demo import DEMO_LICENSE_KEY, DEMO_TERMINAL
from chaos import channels, faults, mpay_client
from chaos.channels import BUSY, LOST, OK, Outcome
from chaos.server import ROOT, Served
from chaos.trade_clients import card_reqinfo
from chaos.world import SMS_SECRET, World, provision
from http_api.order_client import ClientIdentity
from recharge import db
from recharge.keys import load_keys
from recharge.kkt.cards import DEMO_CARDS, DEMO_PASSWORD

HTTP_LIMIT = 48
DD_LIMIT = 100  # DD connections per worker for the run: the slow client's idle ones fill them (the fuzzer uses 64)
PLATFORM_ENV = {
    "RECHARGE_SMS_SHARED_SECRET": SMS_SECRET,
    "RECHARGE_DD_IDLE_TIMEOUT_S": "5",  # slow clients' idle connections come and go within a run
    "RECHARGE_POOL_ACQUIRE_TIMEOUT_S": "2",
    "RECHARGE_KKT_CARD_DAILY_COUNT": "1000000000",  # the run does more trades per card than a day allows
    "RECHARGE_KKT_TERMINAL_DAILY_RECHARGE_CENTS": "1000000000000000",
    "RECHARGE_WALLET_AIR_DAY_COUNT": "1000000000",  # the SIM wallet clients air-recharge more than 5 times a day
    "RECHARGE_WALLET_AIR_DAY_CENTS": "1000000000000",
    "RECHARGE_HTTP_MAX_CONNECTIONS": str(HTTP_LIMIT),  # per worker: the slow client's idle ones reach it
    "RECHARGE_DD_MAX_CONNECTIONS": str(DD_LIMIT),  # per worker: the slow client's idle ones fill it up
}
DEADLINE_S = 10.0  # a terminal's, a client's and a probe's deadline for one answer (× slack)


@dataclass
class Config:
    seed: int
    duration_s: float
    kills: int
    db_restarts: int
    frames: int
    dd_clients: int = 3
    kkt_clients: int = 2
    sms_clients: int = 1
    order_clients: int = 1
    mpay_clients: int = 1
    wallet_clients: int = 1
    slow_clients: int = 1
    workers: int = 1
    proxy_rate: float = 0.3
    pace_s: float = 0.05
    api_examples: int = 0  # schemathesis examples per operation and mode in each HTTP fuzzing pass (0: none)
    api_phases: str = "fuzzing"
    slack: float = 1.0  # every deadline × this (a loaded machine); 1: the platform's promises as written
    recover_s: float = 300.0  # clients settle what they left unknown (a schedule running late included)
    data_dir: Path = ROOT / "var" / "chaos"


@dataclass
class Measured:
    """What happened to the platform during the run."""

    faults: list[dict[str, Any]] = field(default_factory=list)  # one per fault: kind, times, recovery
    windows: list[tuple[float, float]] = field(default_factory=list)  # wall-clock spans the server was down


def client_source(n: int) -> str:
    """The loopback address the ``n``-th client's proxied connections come from (the proxy's log names it)."""
    return f"127.0.1.{n + 1}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Harness:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.dir = cfg.data_dir / f"{cfg.seed}-{secrets.token_hex(3)}"
        self.dir.mkdir(parents=True)
        self.external_url = os.environ.get("DATABASE_URL") or None
        self.database_name = ""
        self.embedded: db.EmbeddedPostgres | None = None
        self.proxy: subprocess.Popen[str] | None = None
        self.clients: list[subprocess.Popen[bytes]] = []
        self.sources: dict[str, str] = {}  # a client's source address → its journal's name
        self.measured = Measured()
        self.served = Served(self.dir / "data", dd_port=free_port(), http_port=free_port(), workers=cfg.workers,
                             database_url=self._database(), env=PLATFORM_ENV)

    def _database(self) -> str | None:
        """A database of the run's own on the DATABASE_URL server; None: the embedded one."""
        if not self.external_url:
            return None
        self.database_name = f"chaos_{self.cfg.seed}_{secrets.token_hex(3)}"
        asyncio.run(db.execute_once(self.external_url, f'CREATE DATABASE "{self.database_name}"'))
        return db.with_database(self.external_url, self.database_name)

    @property
    def deadline_s(self) -> float:
        return DEADLINE_S * self.cfg.slack

    # --- set-up

    def start(self) -> World:
        self.served.start()
        self.served.demo = False  # restarts run serve as production does: the data is there already
        if self.served.database_url is None:
            self.embedded = db.EmbeddedPostgres(self.served.data_dir / "pgdata")  # a handle of our own
        world = World(timeout_s=self.deadline_s, http_limit=HTTP_LIMIT * self.cfg.workers,
                      dd_limit=DD_LIMIT * self.cfg.workers, workers=self.cfg.workers, database_url=self.served.database_url or (self.embedded.uri if self.embedded else ""),
                      keys_file=str(self.served.data_dir / "keys.json"), dd_port=self.served.dd_port,
                      http_port=self.served.http_port, proxy_dd_port=free_port(), proxy_http_port=free_port())
        provision(world, self.served.data_dir, dd_clients=self.cfg.dd_clients, kkt_clients=self.cfg.kkt_clients,
                  sms_clients=self.cfg.sms_clients, order_clients=self.cfg.order_clients,
                  mpay_clients=self.cfg.mpay_clients, wallet_clients=self.cfg.wallet_clients, pins_each=int(self.cfg.duration_s * 1.5) + 50)
        world.save(self.dir / "world.json")
        self.world = world
        keys = load_keys(Path(world.keys_file))
        self.probe_card = fixtures.virtual_card(keys, world.order_cards[-1][0])
        self.who = ClientIdentity(7, 1, Path(world.order_key_file).read_text())
        self._start_proxy()
        return world

    def _start_proxy(self) -> None:
        w = self.world
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "chaos.proxy", "--seed", str(self.cfg.seed), "--rate", str(self.cfg.proxy_rate),
             "--route", f"{w.proxy_dd_port}:{w.dd_port}:dd", "--route", f"{w.proxy_http_port}:{w.http_port}:http",
             "--stats", str(self.dir / "proxy.json"), "--log", str(self.dir / "proxy-faults.jsonl")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proxy.stdout is not None
        if self.proxy.stdout.readline().strip() != "PROXY READY":
            raise RuntimeError("the proxy did not start")

    def start_clients(self, until: float) -> None:
        c = self.cfg
        kinds = ([("dd", i) for i in range(c.dd_clients)] + [("kkt", i) for i in range(c.kkt_clients)]
                 + [("sms", i) for i in range(c.sms_clients)] + [("order", i) for i in range(c.order_clients)]
                 + [("mpay", i) for i in range(c.mpay_clients)] + [("wallet", i) for i in range(c.wallet_clients)]
                 + [("slow", i) for i in range(c.slow_clients)])
        for n, (kind, index) in enumerate(kinds):
            self.sources[client_source(n)] = f"journal-{kind}{index}.jsonl"
            self.clients.append(subprocess.Popen(
                [sys.executable, "-m", "chaos.client", kind, "--world", str(self.dir / "world.json"),
                 "--index", str(index), "--journal", str(self.dir / f"journal-{kind}{index}.jsonl"),
                 "--seed", str(c.seed * 1000 + n), "--until", str(until),
                 "--recover-until", str(until + c.recover_s), "--pace", str(c.pace_s),
                 "--source", client_source(n)],
                cwd=ROOT, stderr=(self.dir / f"client-{kind}{index}.err").open("w")))

    def wait_clients(self) -> list[int]:
        codes = []
        for proc in self.clients:
            try:
                codes.append(proc.wait(self.cfg.recover_s + 60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes

    # --- faults

    def run_schedule(self, events: list[faults.Event], started: float) -> None:
        for event in events:
            time.sleep(max(0.0, started + event.at_s - time.time()))
            record = self.kill_and_restart() if event.kind == faults.KILL else self.restart_database(event.down_s)
            record["at_s"] = round(time.time() - started, 2)
            self.measured.faults.append(record)
            print(f"chaos: {record}", flush=True)

    def kill_and_restart(self) -> dict[str, Any]:
        killed = time.time()
        self.served.kill9()
        restart_s = self.served.start()
        self.measured.windows.append((killed, time.time()))
        recovered = self.until_every_channel_answers()
        return {"kind": faults.KILL, "restart_s": round(restart_s, 3), "recovery_s": round(recovered - killed, 3)}

    def restart_database(self, down_s: float) -> dict[str, Any]:
        stopped = time.time()
        if self.embedded is not None:
            self.embedded.pg_ctl("stop", "-m", "immediate", "-w")
            kind = faults.DB_RESTART
        else:  # a shared server is not ours to stop: every connection of the run's database is cut instead
            asyncio.run(db.execute_once(self.external_url or "", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                 f" WHERE datname = '{self.database_name}' AND pid <> pg_backend_pid()"))
            kind = "db_connections_cut"
        during = self.probe_all()
        time.sleep(down_s)
        starting = time.time()
        if self.embedded is not None:
            self.embedded.revive()  # pg_ctl start -w: back once it accepts connections (after crash recovery)
        back = time.time()
        recovered = self.until_every_channel_answers()
        return {"kind": kind, "down_s": round(back - stopped, 3), "db_start_s": round(back - starting, 3),
                "recovery_s": round(recovered - back, 3),
                "while_down": {name: [o.status, round(o.seconds, 3)] for name, o in during.items()},
                **_verdict_while_down(kind, during, self.deadline_s)}

    # --- probes: one definite answer per channel

    def probe_all(self) -> dict[str, Outcome]:
        w = self.world
        api = w.http(via_proxy=False)
        query = {"LICENSEKEY": DEMO_LICENSE_KEY, "TRADETYPE": "0011", "TRADEMODE": "0",
                 "CARDNO": DEMO_CARDS[1], "CARDPWD": DEMO_PASSWORD, "POSCODE": DEMO_TERMINAL}
        return {
            "dd": _dd_probe(w, self.deadline_s),
            "kkt_rest": channels.kkt_rest(api, query),
            "kkt_soap": channels.kkt_soap(api, query),
            "sms": channels.sms_command(api, w.sms_secret, w.sms_operators[0], f"YECX*{w.sms_cards[0][0]}",
                                        secrets.token_hex(6)) if w.sms_operators else Outcome(OK),
            "order": channels.create_order(api, self.who, self.probe_card.card_no, 1, "probe-" + secrets.token_hex(6),
                                           card_reqinfo(self.probe_card)),
            "mpay": _mpay_probe(api),
            "readyz": _readyz_probe(api),
        }

    def until_every_channel_answers(self, limit_s: float = 120.0) -> float:
        """The wall-clock time at which every channel answered a probe with a definite answer."""
        pending = None
        deadline = time.time() + limit_s
        while time.time() < deadline:
            results = self.probe_all()
            pending = {n: o.status for n, o in results.items() if o.status in (BUSY, LOST, channels.FAILED)}
            if not pending:
                return time.time()
            time.sleep(0.05)
        raise RuntimeError(f"the platform did not recover within {limit_s} s: {pending}")

    # --- the end

    def proxy_stats(self) -> dict[str, Any]:
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            self.proxy.wait(10)
        try:
            stats: dict[str, Any] = json.loads((self.dir / "proxy.json").read_text())
            return stats
        except (OSError, ValueError):
            return {}

    def close(self) -> None:
        for proc in self.clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.proxy_stats()
        self.served.stop()
        if self.embedded is not None:
            self.embedded.cleanup()
        if self.database_name and self.external_url:
            asyncio.run(db.execute_once(self.external_url, f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)'))


def _verdict_while_down(kind: str, during: dict[str, Outcome], deadline_s: float) -> dict[str, bool]:
    """The database stopped: every channel busy (``/readyz`` 503) well within its deadline. Its connections
    cut on a shared server it does not own (``db_connections_cut``): the pool reconnects at once, so every
    channel must answer definitely (or busy) within its deadline, never fail or hang."""
    quick = all(o.seconds < deadline_s for o in during.values())
    if kind == faults.DB_RESTART:
        return {"busy_while_down": quick and all(o.status == BUSY for o in during.values())}
    return {"answered_while_cut": quick and all(o.status in (OK, BUSY, channels.REFUSED) for o in during.values())}


def _mpay_probe(api: channels.Http) -> Outcome:
    """``/mpay/v1/me/balance`` with a token nobody holds: a definite ``1003`` once the database answers."""
    outcome = mpay_client.json_call(api, "GET", "/me/balance", None, token="chaos-probe-" + secrets.token_hex(8))
    if outcome.status == mpay_client.RELOGIN:
        outcome.status = OK
    return outcome


def _readyz_probe(api: channels.Http) -> Outcome:
    """``/readyz``: 200 ok, 503 busy (the database is not there)."""
    def call() -> Outcome:
        status = api.request("GET", "/readyz")[0]
        return Outcome({200: OK, 503: BUSY}.get(status, channels.FAILED), str(status))

    return channels.timed(call)


def _dd_probe(w: World, deadline_s: float) -> Outcome:
    """DD01 of a terminal nobody registered: a definite ``0xA1`` once the database answers."""
    from server.terminal_client import TerminalClient

    def call() -> Outcome:
        host, port = w.dd_target(via_proxy=False)
        with TerminalClient(host, port, "99999999", "99999999", timeout_s=deadline_s) as client:
            result = client.dd01().result
        return Outcome(channels.dd_result_status(result), f"{result:02X}")

    outcome = channels.timed(call)
    return Outcome(OK, outcome.code, seconds=outcome.seconds) if outcome.status == channels.REFUSED else outcome
