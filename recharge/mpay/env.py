"""What every mobile payment operation needs besides its connection: settings, keys, hasher.

``Env.of(settings, master_keys)`` is built once per process (the channels cache it) and
passed to the domain functions; the domain never reads the process-wide platform itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from recharge.config import Settings
from recharge.keys import MasterKeys
from recharge.mpay.credentials import Hasher, Policy
from recharge.mpay.keyring import MpayKeys


@dataclass(frozen=True)
class Env:
    settings: Settings
    keys: MpayKeys = field(repr=False)
    hasher: Hasher = field(repr=False)

    @classmethod
    def of(cls, settings: Settings, master: MasterKeys) -> Env:
        keys = MpayKeys.of(master)
        hasher = Hasher(
            keys.pepper,
            time_cost=settings.mpay_argon2_time_cost,
            memory_kib=settings.mpay_argon2_memory_kib,
            parallelism=settings.mpay_argon2_parallelism,
        )
        return cls(settings=settings, keys=keys, hasher=hasher)

    @property
    def policy(self) -> Policy:
        s = self.settings
        return Policy(max_failures=s.mpay_password_max_failures, lock=dt.timedelta(seconds=s.mpay_password_lock_s))

    def provinces(self, text: str) -> frozenset[str]:
        return frozenset(p.strip() for p in text.split(",") if p.strip())
