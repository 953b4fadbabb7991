"""The manifest checks pydantic cannot express, on an already validated manifest.

Unknown URL schemes, a destination inside its source, duplicate names,
recipients that do not parse, storage classes the store lacks, tabular fields
on a files destination, lifecycle rules that cannot work, and clear-text
transport to another host without the opt-in (transport.py). Each problem is a
(path of keys and indexes, message) pair; manifest/model.py turns paths into file:line.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

from datamove.manifest.fidelity import fidelity_problems
from datamove.redact import Path_
from datamove.stores.base import backend_for, protocol_of
from datamove.stores.core import glob_to_regex
from datamove.stores.transport import OPT_IN, clear_text_scheduler, insecure_settings

if TYPE_CHECKING:
    from datamove.manifest.model import DatasetSpec, KeysSpec, Manifest

S3_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                      "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "REDUCED_REDUNDANCY")


def semantic_problems(manifest: Manifest) -> Iterator[tuple[Path_, str]]:
    yield from _transport_problems(manifest)
    ledger_backend = backend_for(protocol_of(manifest.ledger))
    if ledger_backend.missing_client():
        yield ("ledger",), str(ledger_backend.missing_client())
    if not ledger_backend.can_host_ledger:
        yield ("ledger",), (f"{ledger_backend.protocol}:// cannot hold the ledger (a Delta Lake "
                            "table); put it on a local path, s3://, gs:// or az://")
    seen: dict[str, int] = {}
    for i, dataset in enumerate(manifest.datasets):
        if dataset.name in seen:
            yield ("datasets", i, "name"), (
                f"dataset name {dataset.name!r} is already used by datasets[{seen[dataset.name]}]"
            )
        seen.setdefault(dataset.name, i)
        for side in ("source", "destination"):
            url = getattr(dataset, side).url
            problem = _url_problem(url) or backend_for(protocol_of(url)).missing_client()
            if problem:
                yield ("datasets", i, side, "url"), problem
        src, dst = comparable_url(dataset.source.url), comparable_url(dataset.destination.url)
        if src == dst:
            yield ("datasets", i, "destination", "url"), "is the same location as the source"
        elif dst.startswith(src):
            yield ("datasets", i, "destination", "url"), (
                "lies inside the source; a copy would include its own output. Choose a "
                "destination outside the source"
            )
        yield from _encryption_problems(manifest, dataset, i)
        yield from fidelity_problems(dataset, i)
        storage_class = dataset.destination.storage_class
        url = dataset.destination.url
        backend = backend_for(protocol_of(url))
        store = backend.name.upper()  # S3 writes classes that are no lifecycle tier, too
        classes = S3_STORAGE_CLASSES if backend.name == "s3" else \
            tuple(backend.storage_classes or ())
        if storage_class is not None and not classes:
            yield ("datasets", i, "destination", "storage_class"), (
                "only S3 destinations have storage classes, and GCS destinations too; remove "
                "it, or use an s3:// or gs:// destination")
        elif storage_class is not None and storage_class not in classes:
            yield ("datasets", i, "destination", "storage_class"), (
                f"unknown {store} storage class {storage_class!r}; one of {', '.join(classes)}")
        if dataset.destination.links != "skip":
            yield ("datasets", i, "destination", "links"), (
                "is for local sources only; a destination never follows or writes links")
        if dataset.destination.inventory is not None:
            yield ("datasets", i, "destination", "inventory"), (
                "is for sources only: an S3 Inventory lists the objects to copy")
        if dataset.source.inventory is not None and \
                backend_for(protocol_of(dataset.source.url)).name != "s3":
            yield ("datasets", i, "source", "inventory"), (
                "needs an s3:// source: an S3 Inventory lists the objects of an S3 bucket")
        if dataset.source.links != "skip" and local_path(dataset.source.url) is None:
            yield ("datasets", i, "source", "links"), (
                "applies to local sources only; object stores have no symbolic links")
        if dataset.source.storage_class is not None:
            yield ("datasets", i, "source", "storage_class"), (
                "is for destinations only (the class objects are written in)")
        yield from _tabular_problems(manifest, dataset, i)
        yield from _lifecycle_problems(dataset, i)
        yield from _filter_problems(dataset, i)
        both = [p for p in dataset.exclude if p in set(dataset.include)]
        if both:
            yield ("datasets", i, "exclude"), (
                f"{', '.join(repr(p) for p in both)} is both included and excluded; exclude "
                "wins, so remove it from one of the lists")


def _transport_problems(manifest: Manifest) -> Iterator[tuple[Path_, str]]:
    """Plain http:// or TLS checks off towards another host, wherever a manifest
    names a place: the ledger, each location, each KMS endpoint; and a clear-text
    Dask scheduler on another host."""
    problem = None if manifest.engine.allow_insecure else \
        clear_text_scheduler(manifest.engine.scheduler)
    if problem is not None:
        yield ("engine", "scheduler"), problem
    yield from insecure_settings(manifest.ledger, manifest.ledger_options, ("ledger",),
                                 ("ledger_options",), "ledger_options")
    for i, dataset in enumerate(manifest.datasets):
        places = [((side,), getattr(dataset, side)) for side in ("source", "destination")]
        places += [(("lifecycle", j, "location"), rule.location)
                   for j, rule in enumerate(dataset.lifecycle) if rule.location is not None]
        for at, loc in places:
            yield from insecure_settings(loc.url, loc.options, ("datasets", i, *at, "url"),
                                         ("datasets", i, *at, "options"))
    keys = [(("keys",), manifest.keys)] + [
        (("datasets", i, "encrypt"), d.encrypt) for i, d in enumerate(manifest.datasets)]
    for at, spec in keys:
        identity = spec.identity if spec is not None else None
        if identity is not None and identity.kms_endpoint_url:
            yield from insecure_settings(
                identity.kms_endpoint_url, {OPT_IN: identity.allow_insecure},
                (*at, "identity", "kms_endpoint_url"), (*at, "identity"),
                "the identity mapping")


def _tabular_problems(manifest: Manifest, dataset: DatasetSpec,
                      i: int) -> Iterator[tuple[Path_, str]]:
    src, dst = dataset.source, dataset.destination
    delta = dst.format == "delta"
    if dst.format not in (None, "files", "delta"):
        yield ("datasets", i, "destination", "format"), (
            f"{dst.format!r} is a source format; a destination is 'files' (the default) or "
            "'delta' (load the rows into a Delta table)")
    if src.format in ("files", "delta"):
        yield ("datasets", i, "source", "format"), (
            "a source format is the files' format: parquet, csv or jsonl")
    elif src.format is not None and not delta:
        yield ("datasets", i, "source", "format"), (
            "only matters when the destination has format: delta; remove it, or set "
            "destination.format: delta")
    for side, loc in (("source", src), ("destination", dst)):
        for field in ("partition_by", "schema_mode"):
            if getattr(loc, field) and (side == "source" or not delta):
                yield ("datasets", i, side, field), (
                    "only applies to a destination with format: delta")
    if delta and manifest.encryption_of(dataset) is not None:
        yield ("datasets", i, "encrypt"), (
            "a format: delta destination cannot be encrypted: datamove encrypts whole "
            "objects with age, which would leave the table unreadable, and has no Parquet "
            "encryption. Remove encrypt, or copy the files as they are (format: files)")


def _lifecycle_problems(dataset: DatasetSpec, i: int) -> Iterator[tuple[Path_, str]]:
    delta = dataset.destination.format == "delta"
    protocol = protocol_of(dataset.destination.url)
    tiers = backend_for(protocol).storage_classes
    seen: dict[timedelta, int] = {}
    for j, rule in enumerate(dataset.lifecycle):
        at = ("datasets", i, "lifecycle", j)
        if (rule.tier is None) == (rule.location is None):
            yield at, ("give either tier: (a storage class, changed in place) or location: "
                       "(a cold place for stores without classes), not both or neither")
        if rule.after in seen:
            yield (*at, "after"), f"is the same age as lifecycle[{seen[rule.after]}]"
        seen.setdefault(rule.after, j)
        if delta and (rule.column is None or rule.location is None):
            yield at, ("a format: delta dataset tiers partitions: give column: (the "
                       "partition column holding a date) and location: (the cold Delta table)")
        elif not delta and rule.column is not None:
            yield (*at, "column"), "only applies to datasets with destination format: delta"
        partitions = dataset.destination.partition_by
        if delta and rule.column is not None and rule.column not in partitions:
            yield (*at, "column"), (f"{rule.column!r} is not one of the table's partition_by "
                                    "columns; partitions move whole")
        if rule.tier is not None and tiers is None:
            where = "local" if protocol in ("file", "local") else f"{protocol}://"
            yield (*at, "tier"), (f"{where} stores have no storage classes; use "
                                  "location: {url: …} to move old objects to a cold place")
        elif rule.tier is not None and tiers is not None and rule.tier not in tiers:
            yield (*at, "tier"), (f"unknown {protocol} storage class {rule.tier!r}; one of "
                                  f"{', '.join(tiers)}")
        if rule.location is not None and not delta:
            unused = [f for f in ("format", "partition_by", "schema_mode")
                      if getattr(rule.location, f)]
            for field in unused:
                yield (*at, "location", field), "does not apply to a cold location"
            cold_class = rule.location.storage_class
            if cold_class is not None and not rule.location.url.startswith(("s3://", "s3a://")):
                yield (*at, "location", "storage_class"), (
                    "only S3 cold locations have a storage class")
            elif cold_class is not None and cold_class not in S3_STORAGE_CLASSES:
                yield (*at, "location", "storage_class"), (
                    f"unknown S3 storage class {cold_class!r}; one of "
                    f"{', '.join(S3_STORAGE_CLASSES)}")
        if rule.location is not None:
            problem = _url_problem(rule.location.url)
            if problem:
                yield (*at, "location", "url"), problem
            elif comparable_url(rule.location.url).startswith(
                    comparable_url(dataset.destination.url)):
                yield (*at, "location", "url"), (
                    "lies inside the destination; a cold location must be outside it")
    moves = sorted((r.after, j) for j, r in enumerate(dataset.lifecycle) if r.location is not None)
    if not delta and len(moves) > 1:
        yield ("datasets", i, "lifecycle", moves[1][1], "location"), (
            "one cold location per dataset: objects move out once (a second location would "
            "leave copies behind)")
    if not delta and moves:
        later = [j for j, r in enumerate(dataset.lifecycle)
                 if r.tier is not None and r.after > moves[0][0]]
        for j in later:
            yield ("datasets", i, "lifecycle", j, "tier"), (
                f"comes after the move to lifecycle[{moves[0][1]}]'s cold location; a class "
                "change there would not apply. Give the cold location's storage_class instead")
    ordered = sorted((r.after, j, r.tier) for j, r in enumerate(dataset.lifecycle)
                     if r.tier is not None and tiers is not None and r.tier in tiers)
    for (_, _, warmer), (_, j, colder) in itertools.pairwise(ordered):
        if tiers is not None and tiers[colder].rank < tiers[warmer].rank:
            yield ("datasets", i, "lifecycle", j, "tier"), (
                f"moves objects back from {warmer} to the warmer {colder}; later rules must "
                "name colder tiers")


def _filter_problems(dataset: DatasetSpec, i: int) -> Iterator[tuple[Path_, str]]:
    """Globs that do not compile, size and age bounds that leave nothing to copy, a
    ``files_from`` that cannot be read, and filters a ``format: delta`` load does
    not apply."""
    at = ("datasets", i)
    for field in ("include", "exclude"):
        for j, pattern in enumerate(getattr(dataset, field)):
            try:
                glob_to_regex(pattern)
            except ValueError as exc:
                yield (*at, field, j), f"{exc}"
    if dataset.min_size is not None and dataset.max_size is not None and \
            dataset.min_size > dataset.max_size:
        yield (*at, "max_size"), (f"is smaller than min_size ({dataset.max_size} < "
                                  f"{dataset.min_size} bytes): no object could pass both")
    if dataset.min_age is not None and dataset.max_age is not None and \
            dataset.min_age > dataset.max_age:
        yield (*at, "max_age"), ("is shorter than min_age: no object is both older than "
                                 "min_age and newer than max_age")
    if dataset.destination.format == "delta":
        for name in ("min_size", "max_size", "min_age", "max_age", "files_from"):
            if getattr(dataset, name) is not None:
                yield (*at, name), ("applies to datasets of files; a format: delta load "
                                    "takes every source file include/exclude leave")
    if dataset.files_from is not None:
        path = local_path(dataset.files_from)
        if path is None:
            yield (*at, "files_from"), ("must be a local file (a path, relative to the "
                                        f"manifest's directory); got {dataset.files_from!r}")
            return
        try:
            with open(os.path.expanduser(path), "rb"):
                pass
        except OSError as exc:
            yield (*at, "files_from"), (
                f"cannot read {path}: {exc.strerror or exc}; check the path (relative paths "
                "start at the manifest's directory)")


def _keys_problems(keys: KeysSpec, at: Path_) -> Iterator[tuple[Path_, str]]:
    """Each recipient where it is written: inline ones parse, a recipients file reads."""
    from datamove.age import InvalidKey, X25519Recipient, load_recipients

    for j, text in enumerate(keys.recipients):
        try:
            X25519Recipient.parse(text.strip())
        except InvalidKey as exc:
            yield (*at, "recipients", j), f"{exc}; recipients are public age1… keys"
    if keys.recipients_file:
        try:
            load_recipients(keys.recipients_file)
        except OSError as exc:
            yield (*at, "recipients_file"), (
                f"cannot read {keys.recipients_file}: {exc.strerror or exc}; check the path "
                "(relative paths start at the manifest's directory)")
        except (InvalidKey, UnicodeDecodeError) as exc:
            yield (*at, "recipients_file"), f"{exc}"


def _encryption_problems(manifest: Manifest, dataset: DatasetSpec,
                         i: int) -> Iterator[tuple[Path_, str]]:
    if i == 0 and manifest.keys is not None:
        yield from _keys_problems(manifest.keys, ("keys",))
    if dataset.encrypt is not None:
        yield from _keys_problems(dataset.encrypt, ("datasets", i, "encrypt"))
    effective = manifest.encryption_of(dataset)
    if effective is not None and not (effective.recipients or effective.recipients_file):
        yield ("datasets", i, "encrypt"), (
            "no recipients to encrypt for: give encrypt: {recipients_file: …} or "
            "{recipients: [age1…]}, or a top-level keys: {recipients_file: …}")


def _known_schemes() -> set[str]:
    """fsspec's protocols, built in and registered at runtime (plugins, tests). fsspec
    is imported here, for a URL, not with this module: a run between local paths never
    needs it (about 35 ms of its start)."""
    import fsspec

    return set(fsspec.available_protocols()) | set(fsspec.registry)


def _url_problem(url: str) -> str | None:
    if any(c in url for c in "\n\r\t\0"):
        return "contains control characters"
    if "://" not in url:
        return None  # a local path
    scheme = url.split("://", 1)[0].lower()
    if not re.match(r"^[a-z][a-z0-9+.-]*$", scheme):
        return ("is not a valid URL: the part before '://' must be a scheme such as s3, gs "
                "or file")
    if scheme not in _known_schemes():
        return (f"unknown storage scheme {scheme!r}; use a local path or an fsspec URL such as "
                "s3://bucket/prefix/, gs://, az://, memory://")
    rest = url.split("://", 1)[1]
    if scheme in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss") and not rest.strip("/"):
        return f"{scheme}:// URL needs a bucket or container name"
    return None


def local_path(url: str) -> str | None:
    """The filesystem path of a local location (plain path, file://, local://), else None."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return rest if scheme.lower() in ("file", "local") else None


def comparable_url(url: str) -> str:
    """A URL normalised for prefix tests: local paths absolute with their symbolic links
    resolved (a destination reached through a link into its source is inside it, and
    ``sync --delete`` would delete source files through it), one trailing slash."""
    local = local_path(url)
    if local is None:
        return url.rstrip("/") + "/"
    return os.path.realpath(os.path.expanduser(local)).rstrip("/") + "/"
