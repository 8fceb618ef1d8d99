"""The mobile payment account's secret keys, derived from the key file's master keys.

SPEC 6 asks for a password pepper, ``K_pin`` (prepaid-card PINs), an OTP key and the
outbox key "from the key file, never the database". They are derived from the key file's
maintenance master key by HMAC-SHA256 with a fixed label each, so no new key-file field is
needed and a key file change rotates them all (docs/OPERATIONS.md "Mobile payment: keys").
None of them is ever logged or shown in a repr.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from recharge.keys import MasterKeys


def _derive(master: bytes, label: str) -> bytes:
    return hmac.new(master, b"mpay:" + label.encode("ascii"), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class MpayKeys:
    pepper: bytes = field(repr=False)  # argon2id secret of passwords and security answers
    pin: bytes = field(repr=False)  # K_pin: HMAC-SHA256 of prepaid-card PINs
    otp: bytes = field(repr=False)  # HMAC of one-time codes
    outbox: bytes = field(repr=False)  # AES-256-GCM of sensitive outbox texts
    kept: bytes = field(repr=False)  # HMAC of what is kept to recognise a repeated request (bodies, secret fields)

    def __repr__(self) -> str:
        return "MpayKeys(<redacted>)"

    @classmethod
    def of(cls, keys: MasterKeys) -> MpayKeys:
        return cls(
            pepper=_derive(keys.maint, "pepper"),
            pin=_derive(keys.maint, "pin"),
            otp=_derive(keys.maint, "otp"),
            outbox=_derive(keys.maint, "outbox"),
            kept=_derive(keys.maint, "kept"),
        )

    def pin_mac(self, pin: str) -> bytes:
        return hmac.new(self.pin, pin.encode("ascii"), hashlib.sha256).digest()

    def kept_mac(self, data: bytes) -> bytes:
        """What is kept of a request to recognise its repeat: a keyed MAC, so a body holding a short
        secret (a 6-digit pay password) cannot be found again from it by trying every value."""
        return hmac.new(self.kept, data, hashlib.sha256).digest()

    def otp_mac(self, purpose: str, obj: str, code: str) -> bytes:
        message = f"{purpose}\n{obj}\n{code}".encode()
        return hmac.new(self.otp, message, hashlib.sha256).digest()
