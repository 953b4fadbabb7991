"""RFC 6962 Merkle trees over audit events (RFC 9162 section 2.1 has the same maths).

Why a Merkle tree on top of the hash chain: a signed checkpoint of the tree's
root lets an auditor check that *one* event is in the log (an inclusion proof
of log2(n) hashes) and that a later log extends an earlier one (a consistency
proof), without reading every event.

leaf hash  = sha256(0x00 || canonical event bytes)
node hash  = sha256(0x01 || left || right)
MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n

All hashes are 32-byte ``bytes``. :class:`Frontier` keeps the roots of the
perfect subtrees a log of any size splits into, so a writer extends the tree in
O(log n) memory and time per event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of leaf hashes (not leaf data)."""
    return _mth(leaves, 0, len(leaves)) if leaves else EMPTY_ROOT


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) without copying slices (hi > lo)."""
    if hi - lo == 1:
        return leaves[lo]
    k = lo + _split(hi - lo)
    return node_hash(_mth(leaves, lo, k), _mth(leaves, k, hi))


class Frontier:
    """The roots of the perfect subtrees of a tree, largest first (one per set bit
    of its size): enough to extend the tree and to compute its root."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()):
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a tree of {size} leaves has {bin(size).count('1')} "
                             f"perfect subtrees, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash: like incrementing a binary counter, carries merge subtrees."""
        self.hashes.append(leaf)
        self.size += 1
        carry = self.size
        while carry % 2 == 0:  # the two last subtrees have the same size: merge them
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)
            carry //= 2

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        result = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            result = node_hash(left, result)
        return result

    def encode(self) -> str:
        return ",".join(h.hex() for h in self.hashes)

    @classmethod
    def decode(cls, size: int, text: str) -> Frontier:
        return cls(size, [bytes.fromhex(h) for h in text.split(",") if h])


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 section 2.1.1: the sibling hashes, leaf up."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf {index} is not in a tree of {len(leaves)} leaves")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:  # walk down from the root; siblings are collected root first
        k = lo + _split(hi - lo)
        if index < k:
            path.append(_mth(leaves, k, hi))
            hi = k
        else:
            path.append(_mth(leaves, lo, k))
            lo = k
    return path[::-1]


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 section 2.1.3.2); compare it with
    a signed root. Raises ValueError when the proof has the wrong shape."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ValueError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("inclusion proof is too short")
    return result


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     expected_root: bytes) -> bool:
    try:
        return root_from_inclusion(index, size, leaf, proof) == expected_root
    except ValueError:
        return False


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 section 2.1.2: the tree of the first ``old_size``
    leaves is a prefix of the tree of all ``leaves``."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError(f"no consistency proof from size {old_size} to size {n}")
    path: list[bytes] = []
    lo, hi, m, complete = 0, n, old_size, True
    while m != hi - lo:  # SUBPROOF(m, D[lo:hi], complete), iteratively
        k = _split(hi - lo)
        if m <= k:
            path.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(_mth(leaves, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        path.append(_mth(leaves, lo, hi))
    return path[::-1]


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: does the tree of ``new_size`` extend the one of
    ``old_size``?"""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a subtree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
