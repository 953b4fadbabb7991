"""Store access for callers: filters, sorted streaming listings, object info, reads.

Every function here hands the work to the location's backend (base.py, one
module per store); callers need not know which store a location is. The
value types (Location, Entry, ObjectInfo) live in base.py and are re-exported
here for the callers that always imported them from this module.

Listings are generators that yield entries in the byte order of the key's UTF-8
encoding — the order S3 lists in — so that the planner can merge a source and a
destination listing in one pass with constant memory (see pipeline/march.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO

from datamove.errors import BadInput, LocationUnreachable
from datamove.redact import scrub
from datamove.stores.base import (
    LINK_POLICIES,
    LINK_SUFFIX,
    META_PART_SIZE,
    META_SHA256,
    PARTIAL_MARKER,
    Entry,
    Location,
    ObjectInfo,
)

__all__ = ["LINK_POLICIES", "LINK_SUFFIX", "META_PART_SIZE", "META_SHA256", "PARTIAL_MARKER",
           "Entry", "KeyFilter", "Location", "ObjectInfo", "check_readable", "describe",
           "glob_to_regex", "list_entries", "open_read", "remove", "stat"]

# gcsfs >= 2026 probes buckets for zonal/HNS features over gRPC unless told not
# to, which fails against emulators and costs a call per bucket. fsspec imports
# gcsfs only when a gs:// filesystem is first made, after this (an explicit
# setting in the environment wins).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


# --- filters -------------------------------------------------------------------------

def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a filter glob with rclone's meaning (docs/MANIFEST.md, "include and
    exclude"); ValueError names what is wrong with a malformed one.

    ``*`` and ``?`` stay within a path segment, ``**`` spans segments, ``[...]`` is
    a class (``[!...]`` or ``[^...]`` negated), ``{a,b}`` an alternation, ``\\``
    escapes the next character. A pattern starting with ``/`` is anchored at the
    dataset root; any other matches the key's tail at a segment boundary
    (``*.jpg`` any name, ``raw/*.csv`` a ``raw`` directory at any depth). A
    trailing ``/`` means the directory and everything under it (``tmp/`` is
    ``tmp/**``). One extension of rclone: ``**/`` also matches no directory at
    all, so ``**/*.jpg`` matches ``a.jpg`` at the root too.
    """
    anchored = pattern.startswith("/")
    body = pattern[1:] if anchored else pattern
    if body.endswith("/") or not body:
        body += "**"
    out: list[str] = []
    braces, i = 0, 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 == len(body):
                raise ValueError(f"{pattern!r} ends with a lone '\\'; write '\\\\' for a "
                                 "backslash")
            out.append(re.escape(body[i + 1]))
            i += 2
        elif body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = body.find("]", i + 2 if body[i + 1:i + 2] in ("!", "^", "]") else i + 1)
            if end == -1:  # no closing ']': an ordinary character
                out.append(re.escape(c))
                i += 1
            else:
                inner = body[i + 1:end].replace("\\", "\\\\").replace("[", "\\[")
                negated = inner[:1] in ("!", "^")
                out.append("[^/" + inner[1:] + "]" if negated else "[" + inner + "]")
                i = end + 1
        elif c == "{":
            braces += 1
            out.append("(?:")
            i += 1
        elif c == "}" and braces:
            braces -= 1
            out.append(")")
            i += 1
        elif c == "," and braces:
            out.append("|")
            i += 1
        elif c == "}":
            raise ValueError(f"{pattern!r} has a '}}' without its '{{'; write '\\}}' for the "
                             "character")
        else:
            out.append(re.escape(c))
            i += 1
    if braces:
        raise ValueError(f"{pattern!r} has a '{{' without its '}}'; write '\\{{' for the "
                         "character")
    prefix = "" if anchored else "(?:.*/)?"
    try:
        return re.compile(f"^{prefix}{''.join(out)}$", re.DOTALL)
    except re.error as exc:  # e.g. a class range out of order, [z-a]
        raise ValueError(f"{pattern!r} is not a valid pattern: {exc}") from None


@dataclass(frozen=True)
class KeyFilter:
    """include/exclude globs from the manifest. No include means everything."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @cached_property
    def _compiled(self) -> tuple[list[re.Pattern[str]], list[re.Pattern[str]]]:
        return [glob_to_regex(p) for p in self.include], [glob_to_regex(p) for p in self.exclude]

    def __call__(self, key: str) -> bool:
        includes, excludes = self._compiled
        if includes and not any(p.match(key) for p in includes):
            return False
        return not any(p.match(key) for p in excludes)


# --- listing -------------------------------------------------------------------------

def list_entries(location: Location, key_filter: KeyFilter | None = None,
                 on_partial: Callable[[str], None] | None = None,
                 on_link: Callable[[str], None] | None = None) -> Iterator[Entry]:
    """Yield every object under ``location`` in UTF-8 byte order of its key.

    Memory stays bounded: object stores are read page by page; directory trees
    one directory at a time. Temporary objects (``PARTIAL_MARKER``) are skipped
    and handed to ``on_partial`` (cleanup.py removes those of killed runs);
    symbolic links skipped by ``location.links`` are handed to ``on_link``.
    Raises LocationUnreachable if the root cannot be listed at all.
    """
    for entry in location.backend.list(location, on_link):
        if PARTIAL_MARKER in entry.key:
            if on_partial is not None:
                on_partial(entry.key)
            continue
        if key_filter is None or key_filter(entry.key):
            yield entry


# --- single objects ------------------------------------------------------------------

def stat(location: Location, key: str) -> ObjectInfo | None:
    """What the store knows about one object, or None if it does not exist."""
    return location.backend.stat(location, key)


def open_read(location: Location, key: str) -> BinaryIO:
    """A binary stream over one object (a local file's bypasses fsspec)."""
    return location.backend.open_read(location, key)


def remove(location: Location, key: str) -> None:
    """Delete one object; locally, never through a link below the root."""
    location.backend.remove(location, key)


def check_readable(location: Location) -> None:
    """Fail fast, with a clear message, if a source location cannot be read at all."""
    try:
        location.backend.check_readable(location)
    except BadInput:  # LocationUnreachable, or a bad inventory report (stores/inventory.py)
        raise
    except Exception as exc:
        raise LocationUnreachable(f"{location.url}: cannot reach the store: {describe(exc)}") \
            from exc


def describe(exc: BaseException) -> str:
    """One line about an exception, free of request signatures and credentials."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = scrub(text)
    # An Azure Authorization header: "SharedKey <account>:<signature>".
    text = re.sub(r"(SharedKey(?:Lite)? [^:\s]+:)\S+", r"\1…", text)
    text = re.sub(r"(Signature|Credential|X-Amz-[A-Za-z-]+|token)=[^&\s'\"]+", r"\1=…", text)
    return text.splitlines()[0][:500] if text else type(exc).__name__
