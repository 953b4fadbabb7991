"""RFC 6962 Merkle trees: the certificate-transparency test vectors, and agreement
with a naive implementation written here straight from RFC 6962 section 2.1 for
every size up to 70 (roots, every inclusion proof, every consistency proof)."""

from __future__ import annotations

import hashlib

import pytest

from datamove.audit import merkle

# The CT reference implementation's leaves and roots (RFC 6962 test data, also in
# trillian's merkle/testonly), and proofs for them.
LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
          b"\x50\x51\x52\x53\x54\x55\x56\x57", bytes(range(0x60, 0x70))]
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = {  # (leaf index, tree size): audit path
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}
CONSISTENCY = {  # (old size, new size): proof
    (1, 1): [],
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}


# --- a naive implementation, transcribed from RFC 6962 section 2.1 ------------------

def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def naive_mth(data: list[bytes]) -> bytes:
    n = len(data)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + data[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + naive_mth(data[:k]) + naive_mth(data[k:]))


def naive_path(m: int, data: list[bytes]) -> list[bytes]:
    n = len(data)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, data[:k]), naive_mth(data[k:])]
    return [*naive_path(m - k, data[k:]), naive_mth(data[:k])]


def naive_subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if b else [naive_mth(data)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, data[:k], b), naive_mth(data[k:])]
    return [*naive_subproof(m - k, data[k:], False), naive_mth(data[:k])]


def leaves_of(data: list[bytes]) -> list[bytes]:
    return [merkle.leaf_hash(d) for d in data]


# --- the published vectors ----------------------------------------------------------

def test_roots_match_the_ct_vectors() -> None:
    for size, expected in enumerate(ROOTS):
        assert merkle.root(leaves_of(LEAVES[:size])).hex() == expected, size


def test_frontier_roots_match_the_ct_vectors_and_survive_encoding() -> None:
    frontier = merkle.Frontier()
    assert frontier.root().hex() == ROOTS[0]
    for size, leaf in enumerate(LEAVES, start=1):
        frontier.append(merkle.leaf_hash(leaf))
        assert frontier.root().hex() == ROOTS[size]
        again = merkle.Frontier.decode(size, frontier.encode())
        assert again.root() == frontier.root()
    with pytest.raises(ValueError, match="perfect subtrees"):
        merkle.Frontier.decode(7, frontier.encode())  # 7 leaves need 3 subtree roots


@pytest.mark.parametrize(("index", "size"), sorted(INCLUSION))
def test_inclusion_proofs_match_the_ct_vectors(index: int, size: int) -> None:
    leaves = leaves_of(LEAVES[:size])
    path = merkle.inclusion_proof(index, leaves)
    assert [h.hex() for h in path] == INCLUSION[(index, size)]
    assert merkle.verify_inclusion(index, size, leaves[index], path, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("old", "new"), sorted(CONSISTENCY))
def test_consistency_proofs_match_the_ct_vectors(old: int, new: int) -> None:
    leaves = leaves_of(LEAVES[:new])
    proof = merkle.consistency_proof(old, leaves)
    assert [h.hex() for h in proof] == CONSISTENCY[(old, new)]
    assert merkle.verify_consistency(old, new, bytes.fromhex(ROOTS[old]),
                                     bytes.fromhex(ROOTS[new]), proof)


# --- agreement with the naive transcription, every size and index up to 70 ---------

DATA = [f"event {i}".encode() * (i % 3 + 1) for i in range(70)]


def test_roots_and_frontier_agree_with_the_naive_tree_for_every_size() -> None:
    frontier = merkle.Frontier()
    for size in range(71):
        expected = naive_mth(DATA[:size])
        assert merkle.root(leaves_of(DATA[:size])) == expected, size
        assert frontier.root() == expected, size
        if size < 70:
            frontier.append(merkle.leaf_hash(DATA[size]))


def test_every_inclusion_proof_agrees_and_verifies_and_wrong_ones_fail() -> None:
    for size in range(1, 71):
        leaves = leaves_of(DATA[:size])
        root = naive_mth(DATA[:size])
        for index in range(size):
            path = merkle.inclusion_proof(index, leaves)
            assert path == naive_path(index, DATA[:size]), (index, size)
            assert merkle.verify_inclusion(index, size, leaves[index], path, root)
            if size > 1:
                assert not merkle.verify_inclusion((index + 1) % size, size, leaves[index],
                                                   path, root)
            if path:
                bad = [*path[:-1], bytes(32)]
                assert not merkle.verify_inclusion(index, size, leaves[index], bad, root)
                assert not merkle.verify_inclusion(index, size, leaves[index], path[:-1], root)
            assert not merkle.verify_inclusion(index, size, leaves[index], [*path, root], root)


def test_every_consistency_proof_agrees_and_verifies_and_wrong_ones_fail() -> None:
    for new in range(1, 41):
        leaves = leaves_of(DATA[:new])
        new_root = naive_mth(DATA[:new])
        for old in range(1, new + 1):
            proof = merkle.consistency_proof(old, leaves)
            assert proof == naive_subproof(old, DATA[:new], True), (old, new)
            old_root = naive_mth(DATA[:old])
            assert merkle.verify_consistency(old, new, old_root, new_root, proof)
            other = naive_mth([b"not the log", *DATA[1:old]])
            assert not merkle.verify_consistency(old, new, other, new_root, proof)
            if proof:
                assert not merkle.verify_consistency(old, new, old_root, new_root, proof[:-1])


def test_out_of_range_requests_are_refused() -> None:
    leaves = leaves_of(DATA[:5])
    with pytest.raises(ValueError):
        merkle.inclusion_proof(5, leaves)
    with pytest.raises(ValueError):
        merkle.consistency_proof(0, leaves)
    with pytest.raises(ValueError):
        merkle.consistency_proof(6, leaves)
    assert not merkle.verify_inclusion(3, 3, leaves[0], [], merkle.root(leaves[:3]))
    assert not merkle.verify_consistency(4, 3, bytes(32), bytes(32), [])
