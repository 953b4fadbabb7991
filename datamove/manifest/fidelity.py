"""Checks of a dataset's object-fidelity settings (docs/MANIFEST.md, "Object attributes").

Destination ``content_type``, ``metadata``, ``carry_metadata``, ``sse`` and
``sse_kms_key_id``, and the dataset's ``tags`` against the destination store's
tag limits (stores/attributes.py). Every problem is a (path, message) pair, as in
checks.py, so a manifest that a store would refuse object by object is refused
whole at load (exit 2) before anything moves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from datamove.redact import Path_
from datamove.stores.attributes import tag_problems
from datamove.stores.base import backend_for, protocol_of

if TYPE_CHECKING:
    from datamove.manifest.model import DatasetSpec

_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+( *;.*)?$")
_METADATA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")
METADATA_BYTES = 2048  # S3's limit on user metadata per object (names and values)
_DESTINATION_ONLY = ("content_type", "metadata", "sse", "sse_kms_key_id")


def fidelity_problems(dataset: DatasetSpec, i: int) -> Iterator[tuple[Path_, str]]:
    """Every fidelity setting of ``datasets[i]`` that cannot work, with why."""
    at = ("datasets", i, "destination")
    source, destination = dataset.source, dataset.destination
    for name in _DESTINATION_ONLY:
        if getattr(source, name):
            yield ("datasets", i, "source", name), "applies to destinations only; move it there"
    if not source.carry_metadata:
        yield ("datasets", i, "source", "carry_metadata"), ("applies to destinations only; "
                                                            "move it there")
    backend = backend_for(protocol_of(destination.url))
    if not backend.keeps_attributes:
        for name in ("content_type", "metadata"):
            if getattr(destination, name):
                yield (*at, name), (f"{backend.protocol}:// destinations keep no Content-Type "
                                    "or metadata; use an s3://, gs:// or az:// destination, "
                                    "or remove it")
    if dataset.encrypt is not None and destination.content_type:
        yield (*at, "content_type"), ("an encrypted dataset's objects are all "
                                      "application/octet-stream (a type would describe the "
                                      "plaintext); remove it")
    for pattern, value in destination.content_type.items():
        if not _CONTENT_TYPE.match(value):
            yield (*at, "content_type", pattern), (
                f"{value!r} is not a media type such as text/csv or application/json")
    yield from _metadata_problems(destination.metadata, at)
    yield from _sse_problems(dataset, at, backend.server_side_encryption)
    store = backend.object_tags
    for tag, message in tag_problems(store or "", dataset.tags):
        yield ("datasets", i, "tags", *((tag,) if tag is not None else ())), message


def _metadata_problems(metadata: dict[str, str], at: Path_) -> Iterator[tuple[Path_, str]]:
    size = 0
    for name, value in metadata.items():
        size += len(name.encode()) + len(value.encode())
        if not _METADATA_NAME.match(name):
            yield (*at, "metadata", name), (
                "metadata names are a letter, then letters, digits, '-' or '_' (up to 128): "
                "what every store accepts")
        elif name.lower().replace("_", "-").startswith("datamove-"):
            yield (*at, "metadata", name), "names starting with datamove- are datamove's own"
        if not value.isascii() or any(c in value for c in "\r\n"):
            yield (*at, "metadata", name), ("values must be printable ASCII on one line "
                                            "(S3 sends metadata as HTTP headers)")
    if size > METADATA_BYTES:
        yield (*at, "metadata"), (f"{size} bytes of names and values; S3 keeps at most "
                                  f"{METADATA_BYTES} per object")


def _sse_problems(dataset: DatasetSpec, at: Path_, supported: bool
                  ) -> Iterator[tuple[Path_, str]]:
    destination = dataset.destination
    if destination.sse is not None and not supported:
        yield (*at, "sse"), ("server-side encryption settings are S3's; remove it, or use "
                             "an s3:// destination (other stores encrypt at rest with "
                             "their own keys)")
    if destination.sse_kms_key_id is not None and destination.sse != "aws:kms":
        yield (*at, "sse_kms_key_id"), "names a KMS key for sse: aws:kms; add sse: aws:kms"
