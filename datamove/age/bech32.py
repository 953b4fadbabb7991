"""Bech32 (BIP 173) encoding, as age uses it for keys.

age writes recipients as ``age1…`` (lowercase) and identities as
``AGE-SECRET-KEY-1…`` (uppercase) in plain bech32 (checksum constant 1, not
bech32m). Two deliberate differences from BIP 173, both as in the reference
implementation: the 90-character limit is not enforced (the key parsers check
exact payload lengths instead), and the human-readable part is returned in the
case it was written in, so callers can insist on the canonical case.

Validation is strict because keys are pasted by people: mixed case, characters
outside the charset, a bad checksum, or non-zero padding bits are all refused.
Errors are ``ValueError`` with a message that never repeats the input, since the
input may be a secret key.
"""

from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATORS = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LEN = 6


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATORS):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _create_checksum(hrp: str, data: list[int]) -> list[int]:
    mod = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ 1
    return [(mod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    """Regroup bits; with ``pad=False`` reject leftover or non-zero padding bits."""
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        if value >> from_bits:
            raise ValueError("bech32: value out of range")
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or (acc << (to_bits - bits)) & maxv:
        raise ValueError("bech32: invalid padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` under ``hrp``; the result is lowercase (uppercase it for secrets)."""
    if not hrp or any(not 33 <= ord(c) <= 126 for c in hrp):
        raise ValueError("bech32: invalid human-readable part")
    if hrp.lower() != hrp and hrp.upper() != hrp:
        raise ValueError("bech32: mixed-case human-readable part")
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    return hrp + "1" + "".join(CHARSET[v] for v in values + _create_checksum(hrp, values))


def decode(text: str) -> tuple[str, bytes]:
    """Decode a bech32 string into (hrp as written, data bytes), strictly.

    Raises ``ValueError`` without echoing the input.
    """
    if text.lower() != text and text.upper() != text:
        raise ValueError("bech32: mixed case")
    pos = text.rfind("1")
    if pos < 1 or pos + _CHECKSUM_LEN + 1 > len(text):
        raise ValueError("bech32: separator '1' missing or misplaced")
    hrp = text[:pos]
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise ValueError("bech32: invalid character in human-readable part")
    lowered = text.lower()
    try:
        values = [_CHARSET_REV[c] for c in lowered[pos + 1 :]]
    except KeyError:
        raise ValueError("bech32: invalid character in data part") from None
    if _polymod([*_hrp_expand(hrp.lower()), *values]) != 1:
        raise ValueError("bech32: invalid checksum")
    data = _convert_bits(values[:-_CHECKSUM_LEN], 5, 8, pad=False)
    return hrp, bytes(data)
