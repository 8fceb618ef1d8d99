"""The HTTP fuzzing's signed pass signs STK and POS requests and bank notices as the platform checks them
(chaos/api_fuzz_devices.py): the generated fields kept, the run's device and sequence number put in, the
``X-MAC`` the platform's own check accepts, the notice's signature the platform's own check verifies; and
the STK document they generate from has each op's own params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
import pytest
from Crypto.PublicKey import RSA

from chaos.api_fuzz_devices import Devices, wallet_keys
from core_ext.virtual_handset import VirtualHandset
from core_ext.virtual_sim import VirtualRfidSim
from http_api import wallet_api
from recharge.keys import MasterKeys, load_keys, write_keys
from recharge.mpay import bank
from recharge.wallet import stk, stk_loads
from recharge.wallet.crypto import WalletCrypto, body_mac_ok

CARD, SHOP, HALL = "7310000000000042", "000000000007", "000000000009"


@pytest.fixture(scope="module")
def gateway_key() -> RSA.RsaKey:
    return RSA.generate(2048)


@pytest.fixture
def devices(tmp_path: Path, gateway_key: RSA.RsaKey) -> tuple[Devices, WalletCrypto]:
    write_keys(tmp_path / "keys.json", MasterKeys.generate(demo=True))
    wallet = load_keys(tmp_path / "keys.json").wallet
    assert wallet is not None
    config: dict[str, Any] = {"wallet": {"keys_file": str(tmp_path / "keys.json"), "card": CARD, "seq": 1,
                                         "shop": SHOP, "hall": HALL},
                              "gateways": {"icbc": gateway_key.export_key().decode()},
                              "bank_orders": {"icbc": "bORDER"}}
    return Devices(config), WalletCrypto(wallet)


def test_an_stk_body_goes_as_the_run_s_handset_sends_it(devices: tuple[Devices, WalletCrypto]) -> None:
    found, crypto = devices
    generated = {"card_no": "1234", "seq": 99, "op": "pwd.pay.change", "params": {"old": "旧\ud800", "new": "x"}}
    sent = [found.sign("/mpay/v1/stk", {}, generated) for _ in range(2)]
    for n, one in enumerate(sent):
        assert one is not None
        body, headers = one
        fields = json.loads(body)
        assert fields == {**generated, "card_no": CARD, "seq": 2 + n}  # the handset's card, its next seq
        assert body_mac_ok(crypto.stk_key(CARD), body, headers["X-MAC"])
    assert found.sign("/mpay/v1/stk", {}, ["not", "an", "object"]) is None  # no device sends that


def test_a_pos_body_goes_from_the_route_s_terminal(devices: tuple[Devices, WalletCrypto]) -> None:
    found, crypto = devices
    for path, terminal, seq in (("/mpay/v1/pos/batches", SHOP, 1), ("/mpay/v1/pos/loads/{load_id}/continue", HALL, 1),
                                ("/mpay/v1/pos/wallet-opens", HALL, 2), ("/mpay/v1/pos/returns", SHOP, 2)):
        signed = found.sign(path, {"load_id": "L1"}, {"terminal_id": "1", "pos_seq": 5, "card": "3", "extra": [2.0, 1.5]})
        assert signed is not None
        body, headers = signed
        assert json.loads(body) == {"terminal_id": terminal, "pos_seq": seq, "card": CARD, "extra": [2, 1.5]}
        assert b"[2,1.5]" in body, "a whole number goes as an integer, as a device writes it"
        assert body_mac_ok(crypto.pos_key(terminal), body, headers["X-MAC"])
    body, _ = found.sign("/mpay/v1/pos/returns", {}, {"terminal_id": 7, "pos_seq": True}) or (b"", {})
    assert json.loads(body) == {"terminal_id": 7, "pos_seq": True}  # a malformed device field stays malformed


def test_a_bank_notice_is_signed_as_the_gateway_signs_it(devices: tuple[Devices, WalletCrypto],
                                                         gateway_key: RSA.RsaKey) -> None:
    found, _ = devices
    generated = {"order_id": "b1", "amount": "100", "result": "S", "bank_serial": "X", "sign": "forged",
                 "paid_at": "", "extra": 5}
    for order_id in ("bORDER", "b1"):  # every other notice names the order the run placed at the gateway
        signed = found.sign("/mpay/v1/bank/notify/{gw}", {"gw": "icbc"}, generated)
        assert signed is not None
        body, headers = signed
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert form == {**generated, "order_id": order_id, "extra": "5", "sign": form["sign"]}
        assert form["sign"] != "forged" and bank.verified(gateway_key.publickey().export_key().decode(), form)
    assert found.sign("/mpay/v1/bank/notify/{gw}", {"gw": "unionpay"}, generated) is None  # no key of it
    assert found.sign("/mpay/v1/bank/notify/{gw}", {"gw": "icbc"}, "order_id=b1") is None


def test_the_stk_document_has_a_shape_per_op_that_a_handset_s_requests_fit(tmp_path: Path) -> None:
    """What the signed pass generates STK bodies from: each op's own params (stk.PARAMS, the load ops)."""
    assert set(wallet_api.STK_PARAMS) == {*stk.PARAMS, *stk_loads.LOAD_OPS}
    for op, checks in stk.PARAMS.items():
        assert [set(one) for one in wallet_api.STK_PARAMS[op]] == [set(checks)], op
    schema = wallet_api.openapi_paths()["/stk"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    write_keys(tmp_path / "keys.json", MasterKeys.generate(demo=True))
    handset = VirtualHandset(VirtualRfidSim(CARD, wallet_keys(tmp_path / "keys.json")))
    for op, params in (("wallet.open", {}), ("wallet.limit", {"amount": 500, "pay_password": "246810"}),
                       ("wallet.load.init", {"load_id": "L12"}), ("account.history", {"from": "2026-12-01"})):
        jsonschema.validate(json.loads(handset.request(op, params).body), schema)
    for wrong in ({"op": "wallet.limit", "params": {"amount": 500}}, {"op": "wallet.open", "params": {}},
                  {"op": "hf.self", "params": {"amount": 0}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"card_no": CARD, "seq": 1, **wrong}, schema)
