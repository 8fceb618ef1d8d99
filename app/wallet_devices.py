"""``rechargectl wallet card|stk|pos``: the SIM wallet's virtual devices (``core_ext``'s RFID-SIM, STK handset and
POS with its PSAM) driven from the command line against a running platform, for the demo and for trying things
by hand. Each device keeps its state between commands in ``<data_dir>/wallet-devices/`` (the card's purse,
state file, serials and last-ten log; the handset's ``seq``; the POS's ``pos_seq``, batch number, TTS and the
records not yet uploaded), so a sequence of commands is one device's life. The keys are the platform's key file
(demo keys under ``make run``); the platform is ``--url`` (default this machine's HTTP port).

- ``card CARD``: what the card holds — balance, state file, serials and its last-ten log (SFI ``0x18``), read
  as a handset or POS reads them.
- ``stk CARD OP [name=value …]``: one STK request; the texts the handset shows, and the script run on the card
  (a load's rounds, ``wallet.load.*``, are followed by ``wallet.load.continue`` until the load ends).
- ``pos TERMINAL purchase CARD CENTS`` · ``void CARD SERIAL`` · ``batch`` · ``return CARD SERIAL CENTS`` ·
  ``open CARD`` · ``swap CARD`` · ``cancel CARD`` · ``load CARD [CENTS]``: a merchant's or hall's POS (SPEC 7.3,
  7.4, 7.6, 7.7).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.commands import add_common
from core_ext.virtual_handset import Outcome, VirtualHandset
from core_ext.virtual_pos import PurchaseRecord, PurchaseRefused, SignedRequest, VirtualPOS
from core_ext.virtual_sim import LogRecord, VirtualRfidSim, WalletMasterKeys
from recharge.config import Settings
from recharge.keys import load_keys

CENTS_PARAMS = frozenset(("amount", "balance"))


def _keys(settings: Settings) -> WalletMasterKeys:
    wallet = load_keys(settings.resolved_key_file).wallet
    if wallet is None:
        raise SystemExit("rechargectl wallet: the key file has no SIM wallet keys")
    return WalletMasterKeys(**{n: getattr(wallet, n) for n in ("load", "purchase", "tac", "maint", "stk", "pos")})


class Devices:
    """The device files of one data folder."""

    def __init__(self, settings: Settings) -> None:
        self.folder = settings.data_dir / "wallet-devices"
        self.keys = _keys(settings)

    def _path(self, kind: str, ident: str) -> Path:
        return self.folder / f"{kind}-{ident}.json"

    def _read(self, kind: str, ident: str) -> dict[str, Any]:
        path = self._path(kind, ident)
        return dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else {}

    def _write(self, kind: str, ident: str, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._path(kind, ident).write_text(json.dumps(state, indent=1), encoding="utf-8")

    def sim(self, card_no: str) -> tuple[VirtualRfidSim, int]:
        """The card (a new one: empty, never opened) and its handset's last ``seq``."""
        s = self._read("sim", card_no)
        sim = VirtualRfidSim(card_no, self.keys, balance=s.get("balance", 0), state=s.get("state", 0),
                             limit=s.get("limit", 20_000), offline_serial=s.get("offline_serial", 0),
                             online_serial=s.get("online_serial", 0))
        for record in reversed(s.get("log", [])):
            sim.log.appendleft(LogRecord.decode(bytes.fromhex(record)))
        return sim, int(s.get("seq", 0))

    def save_sim(self, sim: VirtualRfidSim, seq: int) -> None:
        self._write("sim", sim.card_no, {"balance": sim.balance, "state": sim.state, "limit": sim.limit,
                                         "offline_serial": sim.offline_serial, "online_serial": sim.online_serial,
                                         "log": [r.encode().hex() for r in sim.log], "seq": seq})

    def pos(self, terminal_id: str) -> VirtualPOS:
        s = self._read("pos", terminal_id)
        pos = VirtualPOS(terminal_id, self.keys.purchase, self.keys.pos, next_tts=s.get("next_tts", 1),
                         pos_seq=s.get("pos_seq", 0), batch_no=s.get("batch_no", 0))
        pos.pending = [PurchaseRecord(**{**r, "tac": bytes.fromhex(r["tac"])}) for r in s.get("pending", [])]
        return pos

    def save_pos(self, pos: VirtualPOS) -> None:
        pending = [{**asdict(r), "tac": r.tac.hex()} for r in pos.pending]
        self._write("pos", pos.terminal_code, {"next_tts": pos.psam.next_tts, "pos_seq": pos.pos_seq,
                                               "batch_no": pos.batch_no, "pending": pending})


@dataclass
class Reply:
    status: int | None
    body: bytes | None
    mac: str | None

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body or b"{}"))


def send(url: str, request: SignedRequest) -> Reply:
    """POST a signed request; a connection that fails is a reply with no status (the handset's 发送失败)."""
    http = urllib.request.Request(url + "/mpay/v1" + request.path, data=request.body, method="POST",
                                  headers={**request.headers, "X-MAC": request.mac})
    try:
        with urllib.request.urlopen(http, timeout=30) as response:
            return Reply(response.status, response.read(), response.headers.get("X-MAC"))
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.read(), error.headers.get("X-MAC"))
    except OSError:
        return Reply(None, None, None)


def _url(settings: Settings, a: argparse.Namespace) -> str:
    return str(a.url or f"http://127.0.0.1:{settings.http_port}").rstrip("/")


def cmd_card(settings: Settings, a: argparse.Namespace) -> int:
    sim, seq = Devices(settings).sim(a.card_no)
    state = {0: "none", 1: "open", 2: "paused", 3: "cancelled"}.get(sim.state, str(sim.state))
    print(f"card {sim.card_no}: balance {sim.balance / 100:.2f}, state {state}, limit {sim.limit / 100:.2f},"
          f" offline serial {sim.offline_serial}, online serial {sim.online_serial}, STK seq {seq}")
    for n, r in enumerate(sim.log, 1):
        kind = {2: "load", 6: "purchase"}.get(r.kind, f"{r.kind:02X}")
        print(f"  {n:2}. {r.date.hex()} {r.time.hex()} {kind:8} {r.amount / 100:>8.2f}  serial {r.serial}"
              f"  terminal {r.terminal_id.hex()}")
    return 0


def _param(name: str, value: str) -> object:
    return int(value) if name in CENTS_PARAMS else value


def cmd_stk(settings: Settings, a: argparse.Namespace) -> int:
    devices = Devices(settings)
    sim, seq = devices.sim(a.card_no)
    phone = VirtualHandset(sim, seq=seq)
    params = {}
    for item in a.params:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"rechargectl wallet stk: {item!r} is not name=value")
        params[name] = _param(name, value)
    url, op = _url(settings, a), a.op
    try:
        for _ in range(MAX_ROUNDS):
            reply = send(url, phone.request(op, params, op_password=a.op_password))
            outcome = phone.receive(reply.status, reply.body, reply.mac)
            _show(outcome)
            data = outcome.data or {}
            if not (op.startswith("wallet.load.") and outcome.code == "0000" and data.get("script")
                    and outcome.replies is not None):
                break
            # a load's rounds (SPEC 7.3): the script's replies go back by wallet.load.continue
            op, params = "wallet.load.continue", {"load_id": data["load_id"], "replies": outcome.replies.hex().upper()}
    finally:
        devices.save_sim(sim, phone.seq)
    return 0 if outcome.code == "0000" else 1


MAX_ROUNDS = 10  # a load takes three rounds; a platform asking for more is not followed


def _show(outcome: Outcome) -> None:
    for text in outcome.shown:
        print(text)
    print(f"code {outcome.code}" + (f", script ran: {'9000' if outcome.script_ok else 'failed'}"
                                    if outcome.replies is not None else ""))
    if outcome.data:
        print(json.dumps(outcome.data, ensure_ascii=False))


def _record_line(r: PurchaseRecord) -> str:
    return (f"card {r.card} serial {r.offline_serial} amount {r.amount / 100:.2f} balance after"
            f" {r.balance_after / 100:.2f} TTS {r.tts:08X} TAC {r.tac.hex().upper()}{' VOID' if r.void else ''}")


def _answer(pos: VirtualPOS, reply: Reply) -> dict[str, Any]:
    if reply.status is None:
        raise SystemExit("rechargectl wallet pos: no answer from the platform")
    if not pos.reply_ok(reply.body or b"", reply.mac) and reply.status == 200:
        raise SystemExit("rechargectl wallet pos: the reply's X-MAC does not verify")
    answer = reply.json()
    print(f"code {answer.get('code')} {answer.get('msg_zh')}")
    if answer.get("data"):
        print(json.dumps(answer["data"], ensure_ascii=False))
    return answer


def _pos_action(settings: Settings, a: argparse.Namespace, act: Callable[[VirtualPOS, Devices, str], int]) -> int:
    devices = Devices(settings)
    pos = devices.pos(a.terminal_id.rjust(12, "0"))
    try:
        return act(pos, devices, _url(settings, a))
    except PurchaseRefused as refused:
        print(f"the card refused: {refused}")
        return 1
    finally:
        devices.save_pos(pos)


def _with_card(devices: Devices, card_no: str, act: Callable[[VirtualRfidSim], int]) -> int:
    sim, seq = devices.sim(card_no)
    try:
        return act(sim)
    finally:
        devices.save_sim(sim, seq)


def cmd_pos(settings: Settings, a: argparse.Namespace) -> int:
    def purchase(pos: VirtualPOS, devices: Devices, url: str) -> int:
        return _with_card(devices, a.card_no, lambda sim: print(_record_line(pos.purchase(sim, a.cents))) or 0)

    def void(pos: VirtualPOS, devices: Devices, url: str) -> int:
        found = [r for r in pos.pending if r.card == a.card_no and r.offline_serial == a.serial]
        if not found:
            print("no such record waiting for the batch")
            return 1
        print(_record_line(pos.void(found[0])))
        return 0

    def batch(pos: VirtualPOS, devices: Devices, url: str) -> int:
        answer = _answer(pos, send(url, pos.batch()))
        return 0 if answer.get("code") == "0000" else 1

    def refund(pos: VirtualPOS, devices: Devices, url: str) -> int:
        request = pos.request("/pos/returns", card=a.card_no, offline_serial=a.serial, amount=a.cents)
        return 0 if _answer(pos, send(url, request)).get("code") == "0000" else 1

    def scripted(path: str, buy_out: bool) -> Callable[[VirtualPOS, Devices, str], int]:
        def act(pos: VirtualPOS, devices: Devices, url: str) -> int:
            def on(sim: VirtualRfidSim) -> int:
                fields: dict[str, object] = {}
                if buy_out:
                    record = pos.buy_out(sim)
                    print(_record_line(record))
                    fields["record"] = record.wire()
                else:
                    fields["card"] = sim.card_no
                if path != "/pos/swaps":
                    fields["challenge"] = pos.challenge(sim)
                answer = _answer(pos, send(url, pos.request(path, **fields)))
                script = (answer.get("data") or {}).get("script")
                if script:
                    replies = pos.run_script(sim, script)
                    print(f"script ran on the card: {replies.hex().upper()}")
                return 0 if answer.get("code") == "0000" else 1
            return _with_card(devices, a.card_no, on)
        return act

    def load(pos: VirtualPOS, devices: Devices, url: str) -> int:
        def on(sim: VirtualRfidSim) -> int:
            answer = _answer(pos, send(url, pos.load_request(sim.card_no, a.cents)))
            if answer.get("code") != "0000":
                return 1
            load_id = answer["data"]["load_id"]
            # the first round carries the card's challenge: a swap's load writes the new card's state file first
            answer = _answer(pos, send(url, pos.continue_request(load_id, challenge=pos.challenge(sim))))
            for _ in range(MAX_ROUNDS):
                script = (answer.get("data") or {}).get("script")
                if answer.get("code") != "0000" or not script:
                    break
                answer = _answer(pos, send(url, pos.continue_request(load_id, pos.run_script(sim, script))))
            return 0 if answer.get("code") == "0000" else 1
        return _with_card(devices, a.card_no, on)

    actions: dict[str, Callable[[VirtualPOS, Devices, str], int]] = {
        "purchase": purchase, "void": void, "batch": batch, "return": refund, "load": load,
        "open": scripted("/pos/wallet-opens", False), "swap": scripted("/pos/swaps", True),
        "cancel": scripted("/pos/wallet-cancels", True)}
    return _pos_action(settings, a, actions[a.action])


def register(ws: Any) -> None:
    """``card``, ``stk`` and ``pos`` under ``rechargectl wallet``."""
    def add(name: str, help_text: str, func: Callable[[Settings, argparse.Namespace], int]) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = ws.add_parser(name, help=help_text, description=help_text)
        add_common(p)
        p.add_argument("--url", help="the platform's HTTP base URL (default http://127.0.0.1:<http_port>)")
        p.set_defaults(func=func)
        return p

    p = add("card", "show a virtual RFID-SIM: balance, state file, serials, its last-ten log", cmd_card)
    p.add_argument("card_no")
    p = add("stk", "send one STK request from a virtual handset (e.g. wallet.open, account.balance)", cmd_stk)
    p.add_argument("card_no")
    p.add_argument("op")
    p.add_argument("params", nargs="*", help="name=value (amount and balance in cents)")
    p.add_argument("--op-password", help="the operation password, when enabled")
    p = add("pos", "drive a virtual POS terminal with its PSAM", cmd_pos)
    p.add_argument("terminal_id")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text, args in (
            ("purchase", "an offline purchase on the card (kept for the next batch)", ("card_no", "cents")),
            ("void", "撤销 a purchase not yet uploaded", ("card_no", "serial")),
            ("batch", "批上送: upload the purchases kept", ()),
            ("return", "退货 of an uploaded purchase", ("card_no", "serial", "cents")),
            ("open", "a hall POS opens the wallet on the card (/pos/wallet-opens)", ("card_no",)),
            ("swap", "换卡登记: a hall POS buys the old card's whole balance (/pos/swaps)", ("card_no",)),
            ("cancel", "退订: a hall POS buys the wallet out after the counter's permit", ("card_no",))):
        q = actions.add_parser(name, help=help_text, description=help_text)
        for arg in args:
            q.add_argument(arg, type=int if arg in ("cents", "serial") else str)
    q = actions.add_parser("load", help="a hall POS load: POS转存 of CENTS from cash, or (no CENTS) the card's"
                           " oldest waiting load, driven round by round")
    q.add_argument("card_no")
    q.add_argument("cents", type=int, nargs="?")
