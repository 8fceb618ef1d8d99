"""The master keys (SPEC 1.6, 7.1): loaded from a key file or the environment, never the database.

``MK_signin`` diversifies into each terminal module's ``K_pki``, ``MK_load`` into a card's
load key ``DLK``, ``MK_tac`` into its ``DTK``, ``MK_maint`` into its ``DAMK``. Environment
variables ``RECHARGE_MK_SIGNIN`` (…``_LOAD``, ``_TAC``, ``_MAINT``, 32 hex digits) override
the file. The SIM wallet has its own six (``mkw_load``, ``mkw_purchase``, ``mkw_tac``,
``mkw_maint``, ``mkw_stk``, ``mkw_pos``; ``RECHARGE_MKW_*``): all or none; a demo key file
gets SPEC 7.4's test values. When neither exists, ``make run`` generates random
**demo-only** keys into ``<data_dir>/keys.json`` (mode 0600). The keys never appear in a
repr, a log or an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY_NAMES = ("signin", "load", "tac", "maint")
WALLET_KEY_NAMES = ("load", "purchase", "tac", "maint", "stk", "pos")


class KeyFileError(Exception):
    """The key file or a key variable is missing or malformed (the text never shows a key)."""


@dataclass(frozen=True, slots=True)
class WalletKeys:
    """The SIM wallet's master keys (SPEC 7.1): MKW_load, _purchase, _tac, _maint, _stk, _pos."""

    load: bytes = field(repr=False)
    purchase: bytes = field(repr=False)
    tac: bytes = field(repr=False)
    maint: bytes = field(repr=False)
    stk: bytes = field(repr=False)
    pos: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "WalletKeys(<redacted>)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Pretty printers (hypothesis' failure reports, IPython) print a dataclass's fields
        whatever ``repr=False`` says, unless the object prints itself."""
        printer.text(repr(self))

    @classmethod
    def generate(cls) -> WalletKeys:
        return cls(**{name: secrets.token_bytes(16) for name in WALLET_KEY_NAMES})

    @classmethod
    def demo(cls) -> WalletKeys:
        """The demo's wallet keys: SPEC 7.4's test values, and test MKW_load and MKW_pos of the same pattern
        (docs/OPERATIONS.md lists them; demo only)."""
        return cls(**{name: bytes.fromhex(text) for name, text in DEMO_WALLET_KEYS.items()})


DEMO_WALLET_KEYS = {
    "load": "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF",
    "purchase": "11223344556677888877665544332211",
    "tac": "A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8",
    "maint": "C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF",
    "stk": "0123456789ABCDEFFEDCBA9876543210",
    "pos": "E0E1E2E3E4E5E6E7E8E9EAEBECEDEEEF",
}


@dataclass(frozen=True, slots=True)
class MasterKeys:
    signin: bytes = field(repr=False)
    load: bytes = field(repr=False)
    tac: bytes = field(repr=False)
    maint: bytes = field(repr=False)
    demo: bool = False
    wallet: WalletKeys | None = field(default=None, repr=False)  # None: the SIM wallet is off

    def __repr__(self) -> str:
        return f"MasterKeys(<redacted>, demo={self.demo})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # as WalletKeys: never the fields

    @classmethod
    def generate(cls, *, demo: bool = True) -> MasterKeys:
        new = secrets.token_bytes
        return cls(signin=new(16), load=new(16), tac=new(16), maint=new(16), demo=demo, wallet=WalletKeys.generate())


def _parse_key(name: str, text: object) -> bytes:
    if not isinstance(text, str) or len(text) != 32:
        raise KeyFileError(f"master key {name!r} must be 32 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"master key {name!r} is not hexadecimal") from None


def load_keys(path: Path, *, create_demo: bool = False) -> MasterKeys:
    """Read the key file (environment variables win); with ``create_demo`` make one if absent."""
    data: dict[str, object] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise KeyFileError(f"key file {path} is unreadable or not JSON") from None
    elif create_demo and not any(f"RECHARGE_MK_{n.upper()}" in os.environ for n in KEY_NAMES):
        keys = dataclasses.replace(MasterKeys.generate(demo=True), wallet=WalletKeys.demo())
        write_keys(path, keys)
        return keys
    values = {}
    for name in KEY_NAMES:
        raw = os.environ.get(f"RECHARGE_MK_{name.upper()}", data.get(f"mk_{name}"))
        if raw is None:
            raise KeyFileError(f"master key {name!r} is missing (key file {path})")
        values[name] = _parse_key(name, raw)
    keys = MasterKeys(**values, demo=bool(data.get("demo_only", False)), wallet=_wallet_keys(path, data))
    if keys.wallet is None and keys.demo and create_demo and path.exists():
        keys = dataclasses.replace(keys, wallet=WalletKeys.demo())
        write_keys(path, keys)
    return keys


def _wallet_keys(path: Path, data: dict[str, object]) -> WalletKeys | None:
    raw = {n: os.environ.get(f"RECHARGE_MKW_{n.upper()}", data.get(f"mkw_{n}")) for n in WALLET_KEY_NAMES}
    present = [n for n, v in raw.items() if v is not None]
    if not present:
        return None
    if len(present) != len(WALLET_KEY_NAMES):
        missing = ", ".join(n for n in WALLET_KEY_NAMES if raw[n] is None)
        raise KeyFileError(f"wallet master keys missing: {missing} (key file {path}; give all six or none)")
    return WalletKeys(**{n: _parse_key(f"mkw_{n}", raw[n]) for n in WALLET_KEY_NAMES})


def write_keys(path: Path, keys: MasterKeys) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "demo_only": keys.demo,
        "comment": "DEMO-ONLY keys generated by rechargectl; never use them for real cards"
        if keys.demo
        else "master keys",
        **{f"mk_{n}": getattr(keys, n).hex().upper() for n in KEY_NAMES},
    }
    if keys.wallet is not None:
        content.update({f"mkw_{n}": getattr(keys.wallet, n).hex().upper() for n in WALLET_KEY_NAMES})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(content, fh, indent=2)
