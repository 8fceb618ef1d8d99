"""The signed pass's SIM wallet devices and bank gateways (chaos/api_fuzz.py, chaos/api_fuzz_hooks.py).

A generated STK or POS body is sent as the run's own device would send it: the run's RFID-SIM in its
handset (``card_no``, the handset's next ``seq``) or the run's merchant or hall POS with its PSAM
(``terminal_id``, the terminal's next ``pos_seq``), as compact JSON with ``X-MAC`` under ``K_stk``/``K_pos``,
by core_ext's virtual devices (``core_ext.virtual_pos.sign``: what the chaos wallet client sends). Every
other generated field is sent as generated. A generated bank notice is signed as the gateway signs it
(``recharge.mpay.bank.sign_form``, the simulated bank's signature) and sent form-urlencoded; every other
notice names the order the run placed at that gateway, as a bank notifies the orders it was given. A
body a device or a bank could not have sent (not an object) is left as generated: refused at the door.

``provision`` makes them: an RFID-SIM bound to the run's customer (its wallet opened over STK by
``open_wallet`` once the platform answers), cash in its account, a merchant and a hall POS terminal, a
key pair of each gateway (the public half registered) and a bank order of the customer at each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import requests
from Crypto.PublicKey import RSA

from app import fixtures
from core_ext import mac
from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_pos import SignedRequest, VirtualPOS, sign
from core_ext.virtual_sim import VirtualRfidSim, WalletMasterKeys
from recharge.keys import load_keys
from recharge.mpay import accounts, bank, postings
from recharge.mpay.banks import GATEWAYS
from recharge.mpay.env import Env
from recharge.wallet import cards as sim_cards
from recharge.wallet import terminals

HALL = "HN0001"  # the hall of the run's hall POS (and of its counter operator)
CASH_CENTS = 10**8  # the customer's cash, what the wallet's loads draw on
ORDER_CENTS = 10_000  # the run's bank order at each gateway
HALL_ROUTES = ("loads", "wallet-opens", "swaps", "wallet-cancels")  # the others are a merchant POS's
STK_PATH, POS_PREFIX, NOTIFY_PREFIX = "/mpay/v1/stk", "/mpay/v1/pos/", "/mpay/v1/bank/notify/"


def wallet_keys(keys_file: Path) -> WalletMasterKeys:
    """The SIM wallet's master keys of the platform's key file, as the virtual devices take them."""
    wallet = load_keys(keys_file).wallet
    if wallet is None:
        raise RuntimeError("the platform's key file has no SIM wallet keys")
    return WalletMasterKeys(**{n: getattr(wallet, n) for n in ("load", "purchase", "tac", "maint", "stk", "pos")})


async def provision(conn: asyncpg.Connection, env: Env, account_id: int, msisdn: str, keys_file: Path
                    ) -> dict[str, Any]:
    """The run's RFID-SIM (bound to ``msisdn``), its cash, its two POS terminals, the gateways' keys and
    a bank order of the account at each gateway."""
    card, shop, hall = "7310" + fixtures.random_digits(12), fixtures.random_digits(12), fixtures.random_digits(12)
    async with conn.transaction():
        await sim_cards.add_stock(conn, [card])
        await sim_cards.bind(conn, [(msisdn, card)])
        await postings.must(conn, [postings.Move(f"fuzz:cash:{account_id}", await postings.account_id(conn, f"HALL/{HALL}"),
                                                 await postings.account_id(conn, f"C/{account_id}"), CASH_CENTS,
                                                 "mpay_cash", HALL)])
        await terminals.register(conn, [terminals.Terminal(shop, merchant="M" + fixtures.random_digits(7)),
                                        terminals.Terminal(hall, hall=HALL)])
    gateways, orders = {}, {}
    account = await accounts.by_id(conn, account_id)
    assert account is not None
    for gateway, bank_code in zip(GATEWAYS, ("ICBC", "CCB"), strict=True):
        key = RSA.generate(2048)
        await bank.set_gateway_key(conn, gateway, key.publickey().export_key().decode())
        gateways[gateway] = key.export_key().decode()
        orders[gateway] = (await bank.create_order(conn, env, account, bank_code, ORDER_CENTS, "account")).id
    return {"wallet": {"keys_file": str(keys_file), "card": card, "seq": 0, "shop": shop, "hall": hall},
            "gateways": gateways, "bank_orders": orders}


def open_wallet(base_url: str, found: dict[str, Any]) -> None:
    """``wallet.open`` over STK from the run's handset, so the wallet's own operations get past its state."""
    wallet = found["wallet"]
    handset = VirtualHandset(VirtualRfidSim(wallet["card"], wallet_keys(Path(wallet["keys_file"]))), seq=wallet["seq"])
    request = handset.request("wallet.open")
    reply = requests.post(base_url + STK_PATH, data=request.body, headers=request.headers, timeout=30).json()
    if reply["code"] != "0000":
        raise RuntimeError(f"fuzz wallet.open refused: {reply['code']}")
    wallet["seq"] = handset.seq


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integers(value: Any) -> Any:
    """A generated value as a device's encoder writes it: a whole number as an integer (JSON Schema's
    ``integer`` takes ``5.0``, which the generator may give; a device writes ``5``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    return value


def _signed(key: bytes, path: str, fields: dict[str, Any]) -> SignedRequest:
    """The device's signed request; a string no UTF-8 can carry (a lone surrogate) goes as a JSON escape."""
    try:
        return sign(key, path, fields)
    except UnicodeEncodeError:
        body = json.dumps(fields, separators=(",", ":")).encode("ascii")
        return SignedRequest(path, body, mac(key, body).hex().upper())


class Devices:
    """The run's handset and two POS, and the gateways' private keys: what signs a generated request."""

    def __init__(self, config: dict[str, Any]) -> None:
        wallet = config["wallet"]
        keys = wallet_keys(Path(wallet["keys_file"]))
        self.handset = VirtualHandset(VirtualRfidSim(wallet["card"], keys), seq=wallet["seq"])
        self.shop = VirtualPOS(wallet["shop"], keys.purchase, keys.pos)
        self.hall = VirtualPOS(wallet["hall"], keys.purchase, keys.pos)
        self.gateways: dict[str, str] = config["gateways"]
        self.orders: dict[str, str] = config["bank_orders"]
        self.notices = 0

    def stk(self, body: object) -> SignedRequest | None:
        """A generated STK body as the handset sends it: its card, its next ``seq``, its ``X-MAC``."""
        if not isinstance(body, dict):
            return None
        fields = _integers(body)
        if isinstance(fields.get("card_no"), str):
            fields["card_no"] = self.handset.sim.card_no
        if _is_seq(fields.get("seq")):
            self.handset.seq += 1
            fields["seq"] = self.handset.seq
        return _signed(self.handset.sim.k_stk, STK_PATH, fields)

    def pos(self, route: str, body: object) -> SignedRequest | None:
        """A generated POS body as the route's terminal sends it: its id, its next ``pos_seq``, its ``X-MAC``."""
        if not isinstance(body, dict):
            return None
        device = self.hall if route.split("/", 1)[0] in HALL_ROUTES else self.shop
        fields = _integers(body)
        if isinstance(fields.get("terminal_id"), str):
            fields["terminal_id"] = device.terminal_code
        if isinstance(fields.get("card"), str):  # the card it reads: the run's
            fields["card"] = self.handset.sim.card_no
        if _is_seq(fields.get("pos_seq")):
            device.pos_seq += 1
            fields["pos_seq"] = device.pos_seq
        return _signed(device.k_pos, POS_PREFIX + route, fields)

    def notice(self, gateway: object, body: object) -> bytes | None:
        """A generated notice as the gateway sends it: every field as text, ``sign`` over them, form-urlencoded."""
        if not isinstance(gateway, str) or gateway not in self.gateways or not isinstance(body, dict):
            return None
        pem = self.gateways[gateway]
        form = {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in body.items()
                if k != "sign"}
        self.notices += 1
        if self.notices % 2 and "order_id" in form:  # every other one of the order the bank was given
            form["order_id"] = self.orders[gateway]
        try:
            return urlencode(dict(form, sign=bank.sign_form(pem, form)), encoding="utf-8").encode("ascii")
        except UnicodeEncodeError:  # a lone surrogate: no bank could send it
            return None

    def sign(self, path: str, path_parameters: dict[str, Any], body: object) -> tuple[bytes, dict[str, str]] | None:
        """The exact body and headers of a case on ``path`` (the document's template), or None: not ours."""
        signed = None
        if path == STK_PATH:
            signed = self.stk(body)
        elif path.startswith(POS_PREFIX):
            signed = self.pos(path[len(POS_PREFIX):], body)
        elif path.startswith(NOTIFY_PREFIX):
            form = self.notice(path_parameters.get("gw"), body)
            return None if form is None else (form, {"Content-Type": "application/x-www-form-urlencoded"})
        return None if signed is None else (signed.body, signed.headers)
