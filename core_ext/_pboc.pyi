"""Type stub of the compiled PBOC purse cryptography (core_ext/_pboc.pyx)."""

DEPOSIT_UPDATE_HEADER: bytes
WALLET_STATE_UPDATE_HEADER: bytes

def pboc_seslk(dlk16: bytes, random4: bytes, serial: int) -> bytes: ...
def pboc_mac1(seslk8: bytes, balance: int, amount: int, terminal_id6: bytes, *, trans_type: int = ...) -> bytes: ...
def pboc_mac2(
    seslk8: bytes, amount: int, terminal_id6: bytes, date4: bytes, time3: bytes, *, trans_type: int = ...
) -> bytes: ...
def pboc_tac(
    dtk16: bytes,
    balance_after: int,
    serial: int,
    amount: int,
    terminal_id6: bytes,
    date4: bytes,
    time3: bytes,
    *,
    trans_type: int = ...,
) -> bytes: ...
def verify_mac1_make_mac2(
    dlk16: bytes,
    random4: bytes,
    serial: int,
    balance: int,
    amount: int,
    terminal_id6: bytes,
    mac1: bytes,
    date4: bytes,
    time3: bytes,
) -> bytes | None: ...
def verify_tac(
    dtk16: bytes,
    balance_after: int,
    serial: int,
    amount: int,
    terminal_id6: bytes,
    date4: bytes,
    time3: bytes,
    tac: bytes,
) -> bool: ...
def pboc_sespk(dpk16: bytes, random4: bytes, offline_serial: int, tts: int) -> bytes: ...
def pboc_purchase_mac1(sespk8: bytes, amount: int, terminal_id6: bytes, date4: bytes, time3: bytes) -> bytes: ...
def pboc_purchase_mac2(sespk8: bytes, amount: int) -> bytes: ...
def pboc_purchase_tac(dtk16: bytes, amount: int, terminal_id6: bytes, tts: int, date4: bytes, time3: bytes) -> bytes: ...
def verify_purchase_mac1_make_mac2(
    dpk16: bytes,
    random4: bytes,
    offline_serial: int,
    tts: int,
    amount: int,
    terminal_id6: bytes,
    date4: bytes,
    time3: bytes,
    mac1: bytes,
) -> bytes | None: ...
def verify_purchase_tac(
    dtk16: bytes, amount: int, terminal_id6: bytes, tts: int, date4: bytes, time3: bytes, tac: bytes
) -> bool: ...
def deposit_update_mac(damk16: bytes, challenge4: bytes, new_flag: int) -> bytes: ...
def wallet_state_update_mac(damk16: bytes, challenge4: bytes, state: int, limit: int) -> bytes: ...
