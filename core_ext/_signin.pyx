# cython: language_level=3
"""Compiled terminal identities and sign-in (SPEC 1.3): terminal id, diversification data, the cryptograms
both the platform and the security module compute."""

import hmac

from core_ext._des cimport _key

from core_ext._des import des3_decrypt, des3_encrypt, diversify, mac

def constant_time_eq(a: bytes, b: bytes) -> bool:
    """Equality that takes the same time wherever the first difference is."""
    return hmac.compare_digest(a, b)


def terminal_id_bytes(str code not None) -> bytes:
    """The 6-byte terminal id: the terminal's code left-padded with zeros to 12 digits, BCD."""
    if not code.isascii() or not code.isdigit() or len(code) > 12:
        raise ValueError("terminal code must be at most 12 decimal digits")
    return bytes.fromhex(code.rjust(12, "0"))


def pki_div_data(bytes pki4) -> bytes:
    """Diversification data of a security module: 00000000 || PKI."""
    _key(pki4, 4, "PKI")
    return b"\x00\x00\x00\x00" + pki4


def pos_div_data(str code not None) -> bytes:
    """Diversification data of a POS terminal (K_pos, SPEC 7.4): 0000 || its 6-byte terminal id."""
    return b"\x00\x00" + terminal_id_bytes(code)


def card_div_data(str card_no not None) -> bytes:
    """Diversification data of a card: the BCD of its 16-digit logical card number."""
    if not card_no.isascii() or not card_no.isdigit() or len(card_no) > 16:
        raise ValueError("card number must be at most 16 decimal digits")
    return bytes.fromhex(card_no.rjust(16, "0"))


# --- sign-in (SPEC 1.3): the cryptograms both the platform and the security module compute ----

def signin_pki_key(bytes mk_signin16, bytes pki4) -> bytes:
    """K_pki: the sign-in master key diversified by 00000000 || PKI."""
    return diversify(mk_signin16, pki_div_data(pki4))


def signin_cryptogram(bytes k_pki16, bytes random8) -> bytes:
    """3DES(K_pki, random): the answer to a sign-in challenge."""
    _key(random8, 8, "random")
    return des3_encrypt(k_pki16, random8)


def signin_wrap_session_key(bytes k_pki16, bytes sk16) -> bytes:
    """R-AC-Login2 info: 3DES-ECB(K_pki, SK) || first 3 bytes of 3DES(SK, 0^8)."""
    _key(sk16, 16, "session key")
    return des3_encrypt(k_pki16, sk16) + des3_encrypt(sk16, b"\x00" * 8)[:3]


def signin_unwrap_session_key(bytes k_pki16, bytes info19) -> bytes:
    """SK from R-AC-Login2 info; ValueError when its check value does not match."""
    _key(info19, 19, "R-AC-Login2 info")
    sk = des3_decrypt(k_pki16, info19[:16])
    if not hmac.compare_digest(des3_encrypt(sk, b"\x00" * 8)[:3], info19[16:]):
        raise ValueError("session key check value does not match")
    return sk


def signin_proof(bytes sk16, bytes pki4, bytes rt8, bytes rp8) -> bytes:
    """MAC(SK, PKI || RT || RP): the module's proof that it loaded SK."""
    _key(pki4, 4, "PKI")
    _key(rt8, 8, "RT")
    _key(rp8, 8, "RP")
    return mac(sk16, pki4 + rt8 + rp8)
