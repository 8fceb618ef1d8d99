"""A virtual terminal security module (the "core module" behind the reader): its side of sign-in, SPEC 1.3.

The platform side of the same cryptograms is core_ext's ``signin_*`` functions; both are used here so a
test can drive a whole DD01-DD08 exchange against the real server.
"""

from __future__ import annotations

import os
import random

from core_ext import (
    bcd_encode,
    constant_time_eq,
    signin_cryptogram,
    signin_pki_key,
    signin_proof,
    signin_unwrap_session_key,
)


class SAMError(ValueError):
    """The module refused a platform message (wrong cryptogram, bad check value, out of order)."""


class VirtualSAM:
    """The module: R-INIT, R-AC-Login1, R-AC-Login2 responses, with a key diversified by its PKI number."""

    def __init__(self, pki: str, k_pki: bytes, *, seed: int | None = None) -> None:
        self.pki = bcd_encode(pki, 4)
        self._k_pki = k_pki
        self._rng = random.Random(seed) if seed is not None else None
        self._rt: bytes | None = None
        self._rp: bytes | None = None
        self.session_key: bytes | None = None

    @classmethod
    def from_master(cls, pki: str, mk_signin: bytes, *, seed: int | None = None) -> VirtualSAM:
        """A module whose K_pki is the sign-in master key diversified by ``pki`` (as issued)."""
        return cls(pki, signin_pki_key(mk_signin, bcd_encode(pki, 4)), seed=seed)

    def _random8(self) -> bytes:
        return self._rng.randbytes(8) if self._rng is not None else os.urandom(8)

    def r_init(self) -> bytes:
        """R-INIT response (DD03 info): PKI (4, BCD) || module random RT (8)."""
        self._rt = self._random8()
        self._rp = None
        self.session_key = None
        return self.pki + self._rt

    def ac_login1(self, info: bytes) -> bytes:
        """R-AC-Login1 (DD04 info: RP || 3DES(K_pki, RT)) -> 3DES(K_pki, RP) for DD05."""
        if self._rt is None:
            raise SAMError("R-AC-Login1 before R-INIT")
        if len(info) != 16:
            raise SAMError("R-AC-Login1 info must be 16 bytes")
        rp, cryptogram = bytes(info[:8]), bytes(info[8:])
        if not constant_time_eq(signin_cryptogram(self._k_pki, self._rt), cryptogram):
            raise SAMError("platform cryptogram does not verify")
        self._rp = rp
        return signin_cryptogram(self._k_pki, rp)

    def ac_login2(self, info: bytes) -> bytes:
        """R-AC-Login2 (DD06 info: 3DES(K_pki, SK) || KCV) -> MAC(SK, PKI || RT || RP) for DD07."""
        if self._rt is None or self._rp is None:
            raise SAMError("R-AC-Login2 before R-AC-Login1")
        try:
            sk = signin_unwrap_session_key(self._k_pki, bytes(info))
        except ValueError:
            raise SAMError("session key does not unwrap") from None
        self.session_key = sk
        return signin_proof(sk, self.pki, self._rt, self._rp)
