"""Seals: the signing key's signature on the tree every audit commit leaves.

Checkpoints are signed every ``checkpoint_every`` events and at the end of a
command; between two of them the events are only as good as the storage, and
anyone who can write the table can append well-chained events there. The next
honest run must not sign a checkpoint over those as if it vouched for them.
A run killed before its checkpoint, though, leaves honest events there too.
What tells them apart: every commit of a writer holding the signing key carries,
in the commit's own metadata (so it lands with the events or not at all), a seal

    base64(4-byte key hash || Ed25519 signature) of
    datamove-audit-seal/1\\n<origin>\\n<tree size>\\n<hex head hash>\\n<frontier>\\n

where the frontier is the comma-separated hex subtree hashes the commit's
``datamove.audit.frontier`` holds (its root is the Merkle root at that size).
A seal is a checkpoint the writer keeps for itself: it vouches for exactly the
tree it names, which no one without the key can extend. Its first line keeps it
from ever reading as a checkpoint note body, whose second line is a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datamove.audit import merkle
from datamove.audit.note import Checkpoint, NoteError, Signer, Verifier, b64decode, b64encode
from datamove.audit.tables import META_FRONTIER, META_HEAD, META_SIZE

SEAL_KEY = "datamove.audit.seal"
SEAL_FORMAT = "datamove-audit-seal/1"
# Commits looked at, newest first, for the newest valid seal. An honest log's newest
# commit is sealed; more unsealed commits than this on top of it only make the seal
# look further away, which refuses (never adopts) what follows it.
SEAL_HISTORY = 50


def seal_message(origin: str, size: int, head: str, frontier: str) -> bytes:
    return f"{SEAL_FORMAT}\n{origin}\n{size}\n{head}\n{frontier}\n".encode()


def make_seal(signer: Signer, origin: str, size: int, head: str, frontier: str) -> str:
    """The seal of the tree (``size``, ``head``, ``frontier``) of log ``origin``."""
    signature = signer.sign_bytes(seal_message(origin, size, head, frontier))
    return b64encode(signer.verifier.hash + signature)


@dataclass(frozen=True)
class Seal:
    """A seal that verified: the tree after Delta commit ``version``."""

    version: int
    size: int
    head: str
    frontier: merkle.Frontier

    def checkpoint(self, origin: str) -> Checkpoint:
        """The same statement as a checkpoint body, for verification."""
        return Checkpoint(origin, self.size, self.frontier.root(), self.head)


def check_seal(commit: dict[str, Any], origin: str, verifiers: list[Verifier]) -> Seal | None:
    """The commit's seal if one of ``verifiers`` signed it for ``origin``, else None."""
    try:
        size, head, frontier = (int(commit[META_SIZE]), str(commit[META_HEAD]),
                                str(commit[META_FRONTIER]))
        blob = b64decode(str(commit[SEAL_KEY]))
    except (KeyError, ValueError, NoteError):
        return None
    message = seal_message(origin, size, head, frontier)
    for verifier in verifiers:
        if blob[:4] == verifier.hash and verifier.verify(message, blob[4:]):
            try:
                return Seal(int(commit.get("version", -1)), size, head,
                            merkle.Frontier.decode(size, frontier))
            except ValueError:  # signed, so written by datamove: cannot happen
                return None
    return None


def newest_seal(table: Any, origin: str | None, verifiers: list[Verifier],
                limit: int = SEAL_HISTORY) -> Seal | None:
    """The newest commit of the audit ``table`` whose seal verifies, if any."""
    if table is None or origin is None or not verifiers:
        return None
    for depth in sorted({min(4, limit), limit}):  # the newest commits first: one read each
        for commit in table.history(depth):
            if SEAL_KEY in commit and (seal := check_seal(commit, origin, verifiers)):
                return seal
    return None
