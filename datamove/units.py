"""Sizes written the way rclone users write them: ``10M``, ``1.5GiB``, ``500KB``.

Manifests (``min_size``, ``max_size``, ``engine.bwlimit``) and the command
line's flags parse sizes here, so that one spelling means one number
everywhere. Durations (``7d``, ``12h``) are :func:`datamove.tiers.parse_duration`.

The letters are rclone's binary units: ``K``, ``M``, ``G``, ``T``, ``P`` are
KiB, MiB, GiB, TiB, PiB (so are ``Ki``/``KiB``, ...). ``KB``, ``MB``, ... are the
decimal units, spelt out to be chosen on purpose. ``B`` is bytes. One
difference from rclone: a bare number in text (``"100"``) is refused rather than
read as KiB (rclone's reading), since datamove's integers are bytes and the two
readings differ a thousandfold; a YAML integer is a number of bytes.
"""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i?b?)|(b))\s*$", re.IGNORECASE)
EXAMPLES = "10M (MiB), 1.5GiB, 500K (KiB), 200MB (decimal) or 4096B"


def parse_size(value: object) -> int:
    """Bytes from an integer (bytes) or a size text; ValueError saying what is
    accepted otherwise. Case does not matter (``10m`` is ``10M``)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be a size such as {EXAMPLES}, or a whole number of bytes; "
                         f"got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative; got {value}")
        return value
    if value.strip().isdigit():
        raise ValueError(f"needs a unit: {value.strip()}B for bytes, {value.strip()}K for KiB "
                         f"(rclone reads a bare number as KiB); got {value!r}")
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"must be a size such as {EXAMPLES}; got {value!r}")
    number, letter, rest, bytes_only = match.groups()
    if bytes_only:
        power, base = 0, 1024
    else:
        power = _POWERS[letter.lower()]
        # "MB" is decimal; "M", "Mi" and "MiB" are binary (rclone's M).
        base = 1000 if rest.lower() == "b" else 1024
    return int(float(number) * base ** power) if "." in number else int(number) * base ** power


def format_size(size: int) -> str:
    """The shortest exact binary spelling: 10485760 → ``10M``, 1500 → ``1500B``."""
    for letter, power in (("P", 5), ("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        if size and size % 1024 ** power == 0:
            return f"{size // 1024 ** power}{letter}"
    return f"{size}B"
