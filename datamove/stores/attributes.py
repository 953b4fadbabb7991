"""Object fidelity: what a copy carries besides the bytes (docs/BACKENDS.md, "Fidelity").

Content-Type and user metadata travel from source to destination where both
stores keep them; a local source's Content-Type is guessed from the file name
(``mimetypes``). The manifest may set or override both (destination
``content_type``, a map of globs to types, and ``metadata``), applies its
dataset ``tags`` as object tags where the store has them, and may ask S3 for
SSE-KMS (destination ``sse``, ``sse_kms_key_id``).

A dataset's wishes are a :class:`Fidelity` (on the DatasetJob, picklable);
:meth:`Fidelity.for_object` turns them and what the source said into the
:class:`Attributes` one writer sets. Encrypted objects carry nothing that
describes the plaintext: Content-Type ``application/octet-stream`` and no
source metadata (the manifest's own ``metadata`` and ``tags`` are kept: the
operator wrote them about the stored objects, for accounting and rules).

Tag limits are the stores' own (S3 object tagging and Azure blob index tags:
at most 10 tags, keys 1-128 characters, values up to 256, a restricted set of
characters); ``tag_problems`` names every breach so a manifest is refused
(exit 2) before anything moves.
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from datamove.errors import TransferError
from datamove.stores.base import META_PART_SIZE, META_SHA256, Location, ObjectInfo
from datamove.stores.core import glob_to_regex, stat

OCTET_STREAM = "application/octet-stream"
"""The Content-Type of every encrypted object: the ciphertext says nothing more."""

OWN_METADATA = (META_SHA256, META_PART_SIZE)
"""datamove's own metadata: never carried from a source (it describes that copy)."""

SSE_MODES = ("AES256", "aws:kms")

MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
# S3: letters, digits, spaces and + - = . _ : / @ (Unicode letters allowed);
# Azure blob index tags: ASCII letters, digits, space and + - . / : = _.
_S3_TAG_TEXT = re.compile(r"^[\w +\-=.:/@]*$")
_AZURE_TAG_TEXT = re.compile(r"^[A-Za-z0-9 +\-./:=_]*$")
_AZURE_METADATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Attributes:
    """What a writer sets on one object besides its bytes (``WriteOptions.attributes``).

    ``metadata`` never holds datamove's own names; writers add theirs.
    """

    content_type: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    sse: str | None = None
    sse_kms_key_id: str | None = None


@dataclass(frozen=True)
class Fidelity:
    """A dataset's fidelity settings (manifest destination fields, dataset ``tags``).

    ``carry``: take Content-Type and user metadata from the source (one HEAD or
    GET per object on an object-store source). ``content_types``: (glob, type)
    pairs, the first whose glob matches the key wins over the source's type.
    """

    carry: bool = True
    content_types: tuple[tuple[str, str], ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    sse: str | None = None
    sse_kms_key_id: str | None = None

    @classmethod
    def of(cls, carry: bool = True, content_type: dict[str, str] | None = None,
           metadata: dict[str, str] | None = None, tags: dict[str, str] | None = None,
           sse: str | None = None, sse_kms_key_id: str | None = None) -> Fidelity:
        return cls(carry=carry, content_types=tuple((content_type or {}).items()),
                   metadata=tuple(sorted((metadata or {}).items())),
                   tags=tuple(sorted((tags or {}).items())), sse=sse,
                   sse_kms_key_id=sse_kms_key_id)

    def reads_source(self, source_keeps: bool, destination_keeps: bool,
                     encrypted: bool) -> bool:
        """Whether a copy should ask the source store for its object's attributes
        (a HEAD or GET per object): both stores keep them, and the copy is not
        encrypted (nothing of the source's is carried then)."""
        return self.carry and source_keeps and destination_keeps and not encrypted

    def for_object(self, key: str, source: ObjectInfo | None, *, encrypted: bool = False,
                   guess: bool = False) -> Attributes:
        """The attributes of one copy: manifest settings over the source's own.
        ``guess``: the source keeps no Content-Type (a local file): guess it from
        the key's name."""
        metadata: dict[str, str] = {}
        content_type: str | None = None
        if encrypted:
            content_type = OCTET_STREAM
        else:
            if self.carry and source is not None:
                content_type = source.content_type
                metadata = carried_metadata(source.metadata)
            if self.carry and content_type is None and guess:
                content_type = guess_content_type(key)
            for pattern, value in self.content_types:
                if _glob(pattern).search(key):
                    content_type = value
                    break
        metadata.update(self.metadata)
        return Attributes(content_type=content_type, metadata=tuple(sorted(metadata.items())),
                          tags=self.tags, sse=self.sse, sse_kms_key_id=self.sse_kms_key_id)


def _glob(pattern: str) -> re.Pattern[str]:
    return glob_to_regex(pattern)  # the one glob dialect of datamove (include/exclude)


def guess_content_type(key: str) -> str | None:
    """A local file's Content-Type from its name (``mimetypes``; None when unknown)."""
    guessed, encoding = mimetypes.guess_type(key, strict=False)
    if encoding is not None:  # report.csv.gz is gzip bytes, not text/csv
        return {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                "xz": "application/x-xz"}.get(encoding, OCTET_STREAM)
    return guessed


def carried_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """A source's user metadata without datamove's own names (any spelling)."""
    own = {_plain(name) for name in OWN_METADATA}
    return {k: v for k, v in metadata.items() if _plain(k) not in own}


def _plain(name: str) -> str:
    return name.lower().replace("_", "-")


def header_safe(metadata: dict[str, str]) -> dict[str, str]:
    """The metadata S3 and Azure can carry: both send it as HTTP headers, so a name
    or value that is not printable ASCII (GCS allows any UTF-8) is left out rather
    than failing the copy."""
    return {k: v for k, v in metadata.items()
            if _printable(k) and _printable(v)}


def _printable(text: str) -> bool:
    return text.isascii() and all(" " <= c <= "~" for c in text)


def azure_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Metadata under names Azure accepts (C# identifiers): '-' becomes '_'; a name
    still invalid (one starting with a digit, say) is left out, as is what is not
    printable ASCII (``header_safe``)."""
    out = {}
    for name, value in header_safe(metadata).items():
        fixed = name.replace("-", "_")
        if _AZURE_METADATA_NAME.match(fixed):
            out[fixed] = value
    return out


def s3_tagging(tags: tuple[tuple[str, str], ...]) -> str:
    """S3's ``Tagging`` parameter: a URL-encoded query string."""
    from urllib.parse import urlencode

    return urlencode(tags)


def s3_write_args(attributes: Attributes | None, copy: bool = False) -> dict[str, Any]:
    """PutObject / CreateMultipartUpload / CopyObject parameters for the attributes
    (``Metadata`` excluded: the writer merges datamove's own into it). ``copy``:
    for CopyObject, whose tags are the source's unless replaced."""
    if attributes is None:
        return {}
    out: dict[str, Any] = {"TaggingDirective": "REPLACE"} if copy else {}
    if attributes.content_type:
        out["ContentType"] = attributes.content_type
    if attributes.tags:
        out["Tagging"] = s3_tagging(attributes.tags)
    if attributes.sse:
        out["ServerSideEncryption"] = attributes.sse
    if attributes.sse_kms_key_id:
        out["SSEKMSKeyId"] = attributes.sse_kms_key_id
    return out


TAG_STORES = {"s3": "S3 object tags", "azure": "Azure blob index tags",
              "gcs": "GCS object metadata (GCS objects have no labels)"}
"""How each store keeps a dataset's ``tags``; other stores do not keep them."""


def tag_problems(store: str, tags: dict[str, str]) -> Iterator[tuple[str | None, str]]:
    """Each way ``tags`` break ``store``'s limits, as (tag or None, message)."""
    if store not in ("s3", "azure"):
        return
    name = "S3" if store == "s3" else "Azure"
    pattern = _S3_TAG_TEXT if store == "s3" else _AZURE_TAG_TEXT
    allowed = ("letters, digits, spaces and + - = . _ : / @" if store == "s3" else
               "ASCII letters, digits, spaces and + - . / : = _")
    if len(tags) > MAX_TAGS:
        yield None, (f"{len(tags)} tags; {name} keeps at most {MAX_TAGS} per object. Keep "
                     "the ones your accounting and rules use")
    for key, value in tags.items():
        if not 1 <= len(key) <= MAX_TAG_KEY:
            yield key, f"tag names are 1 to {MAX_TAG_KEY} characters on {name}"
        if len(value) > MAX_TAG_VALUE:
            yield key, (f"value is {len(value)} characters; {name} allows at most "
                        f"{MAX_TAG_VALUE}")
        if not pattern.match(key) or not pattern.match(value):
            yield key, f"{name} tags may hold only {allowed}"
        if store == "s3" and key.lower().startswith("aws:"):
            yield key, "the aws: prefix is reserved by AWS"


def confirm_sse(fs: Any, at: dict[str, str], response: dict[str, Any],
                attributes: Attributes | None, url: str) -> None:
    """The object S3 published is encrypted as asked, or it is removed at once.

    A bucket policy or an S3-compatible store may ignore the request, and an
    upload adopted from a killed run was created with that run's settings; an
    object stored without the SSE a policy requires must not stay. The answer's
    ServerSideEncryption (a HEAD when the answer has none) must be the one asked
    for, and an ``aws:kms`` object's key the one named when it was named by id
    or ARN (an alias cannot be compared without asking KMS). The key is never
    put in the message: its ARN carries the account id.
    """
    if attributes is None or not attributes.sse:
        return
    got, key_id = response.get("ServerSideEncryption"), response.get("SSEKMSKeyId")
    if got is None:
        head = fs.call_s3("head_object", **at)
        got, key_id = head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")
    wanted = attributes.sse_kms_key_id
    problem = None
    if got != attributes.sse:
        problem = f"stored with server-side encryption {got or 'none'}, {attributes.sse} asked"
    elif wanted and key_id and not wanted.startswith("alias/") and \
            key_id != wanted and not key_id.endswith(f":key/{wanted}"):
        problem = "encrypted with another KMS key than sse_kms_key_id names"
    if problem is None:
        return
    with contextlib.suppress(Exception):
        fs.call_s3("delete_object", **at)
    raise TransferError(f"{url}: {problem}; the object was removed. Check the bucket's "
                        "encryption settings and the destination's sse fields")


def attributes_for(source: Location, destination: Location, fidelity: Fidelity, key: str,
                   encrypted: bool = False) -> tuple[Attributes | None, ObjectInfo | None]:
    """What the copy of ``key`` carries besides its bytes, and the source's stat when
    it was taken for them (None otherwise; source_guard.SourceCrc checks the read
    against its CRC). None for a destination that keeps no attributes (local files
    keep mode and mtime instead)."""
    if not destination.backend.keeps_attributes:
        return None, None
    keeps = source.backend.keeps_attributes
    info = stat(source, key) if fidelity.reads_source(keeps, True, encrypted) else None
    return fidelity.for_object(key, info, encrypted=encrypted, guess=not keeps), info
