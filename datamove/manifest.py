"""Manifest v1: models, loading, and errors that name file, line and field.

A manifest is YAML validated by pydantic models that forbid unknown keys. YAML is
composed to a node tree first so that every pydantic error location (a path of
keys and indexes) maps back to the line that holds it. Checks pydantic cannot
express (inline secrets, unknown URL schemes, a destination inside its source,
duplicate keys and names) run on the same tree, and every problem is reported at
once so a user fixes the file in one pass. The format is documented in
docs/MANIFEST.md.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import fsspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ManifestError
from .lifecycle import parse_duration, tiers_of
from .redact import Path_, find_secrets
from .yaml_source import (
    UNKNOWN_KEY,
    dotted,
    explain,
    finish,
    index_lines,
    line_for,
    yaml_error,
)

DEFAULT_LEDGER = "./.datamove/ledger"
S3_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                      "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "REDUCED_REDUNDANCY")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class VerifyMode(StrEnum):
    """How a copied object is checked (docs/MANIFEST.md, "verify")."""

    size = "size"
    checksum = "checksum"
    full = "full"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocationSpec(_Strict):
    """Where objects live: an fsspec URL, non-secret store options, a declared region."""

    url: Annotated[str, Field(min_length=1)]
    options: dict[str, Any] = Field(default_factory=dict)
    region: str | None = None
    storage_class: str | None = None  # destination: the class new objects are written in
    # Tabular datasets (docs/MANIFEST.md, "Tabular datasets"): a destination
    # ``format: delta`` loads the source's rows into a Delta table; a source may
    # name its file format (parquet, csv, jsonl), otherwise file suffixes tell.
    format: Literal["files", "delta", "parquet", "csv", "jsonl"] | None = None
    partition_by: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    schema_mode: Literal["strict", "merge"] | None = None


class LifecycleRule(_Strict):
    """After an age, move to a tier (docs/MANIFEST.md, "Lifecycle").

    ``tier`` is a storage class changed in place (S3, GCS); ``location`` is a cold
    place for stores without classes. For ``format: delta`` datasets ``column``
    names the partition column whose value is the age, and ``location`` the cold
    Delta table.
    """

    after: timedelta
    since: Literal["copied", "modified"] = "copied"
    tier: Annotated[str | None, Field(min_length=1)] = None
    location: LocationSpec | None = None
    column: Annotated[str | None, Field(min_length=1)] = None

    @field_validator("after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)


class EngineSpec(_Strict):
    """Where and how wide the work runs.

    Integers are strict: YAML has native integers, so ``threads: true`` or
    ``threads: "8"`` is a mistake worth reporting rather than coercing.
    """

    scheduler: str | None = None
    threads: Annotated[int, Field(strict=True, ge=1, le=256)] = 8
    processes: Annotated[int, Field(strict=True, ge=0, le=256)] = 0
    window: Annotated[int | None, Field(strict=True, ge=1, le=100_000)] = None
    batch_objects: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 256
    batch_bytes: Annotated[int, Field(strict=True, ge=1)] = 64 * 1024 * 1024
    retries: Annotated[int, Field(strict=True, ge=0, le=20)] = 4
    part_size: Annotated[int, Field(strict=True, ge=5 * 1024 * 1024,
                                    le=5 * 1024**3)] = 16 * 1024 * 1024
    fsync: bool = False

    @field_validator("scheduler")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(tcp|tls|inproc|ucx)://[^\s/]+$", value):
            raise ValueError(
                "must be a Dask scheduler address such as tcp://HOST:8786, or null for "
                "the embedded cluster"
            )
        return value

    @property
    def effective_window(self) -> int:
        """In-flight tasks: enough to keep every thread busy while results drain."""
        return self.window or max(4, 2 * self.threads)


ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class IdentitySpec(_Strict):
    """Where the identity for decrypting lives (docs/MANIFEST.md, "Encryption").

    Only a path: a plaintext age identity file, one protected by a passphrase read
    from ``passphrase_env``, or one wrapped by AWS KMS (unwrapped with
    ``kms_context``). The secret itself never appears in a manifest.
    """

    file: Annotated[str, Field(min_length=1)]
    passphrase_env: str = "DATAMOVE_PASSPHRASE"
    kms_context: dict[str, str] = Field(default_factory=dict)
    kms_region: str | None = None
    kms_endpoint_url: str | None = None

    @field_validator("passphrase_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.match(ENV_NAME_PATTERN, value):
            raise ValueError("must be the name of an environment variable (letters, digits "
                             f"and '_', not starting with a digit); got {value!r}")
        return value


class KeysSpec(_Strict):
    """Public recipients to encrypt for, and optionally the identity to decrypt with."""

    recipients: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    recipients_file: Annotated[str | None, Field(min_length=1)] = None
    identity: IdentitySpec | None = None


class EncryptSpec(KeysSpec):
    """A dataset's encryption; anything left out comes from the manifest's ``keys``."""

    suffix: str = ".age"

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if not re.match(r"^\.[A-Za-z0-9._-]{1,32}$", value):
            raise ValueError(f"must be a file suffix such as '.age' (a dot, then up to 32 "
                             f"letters, digits, '.', '_' or '-'); got {value!r}")
        return value


class DatasetSpec(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    source: LocationSpec
    destination: LocationSpec
    include: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    exclude: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    verify: VerifyMode = VerifyMode.checksum
    classification: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    encrypt: EncryptSpec | None = None
    lifecycle: list[LifecycleRule] = Field(default_factory=list)

    @field_validator("encrypt", mode="before")
    @classmethod
    def _encrypt_flag(cls, value: Any) -> Any:
        # `encrypt: true` means "with the manifest's keys"; false or absent means plaintext.
        if value is True:
            return {}
        if value is False or value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("must be true, false, or a mapping such as "
                             "{recipients_file: keys/recipients.txt}")
        return value


class AuditSpec(_Strict):
    """The audit log's signing key (docs/FORMAT.md, "Audit log")."""

    signing_key: Annotated[str | None, Field(min_length=1)] = None  # a path, never the key
    checkpoint_every: Annotated[int, Field(strict=True, ge=1)] = 10_000


class Manifest(_Strict):
    version: Literal[1]
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    ledger: Annotated[str, Field(min_length=1)] = DEFAULT_LEDGER
    ledger_options: dict[str, Any] = Field(default_factory=dict)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    keys: KeysSpec | None = None
    policies: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    audit: AuditSpec = Field(default_factory=AuditSpec)
    schedule: str | None = None  # cron: when `datamove archive` should run
    datasets: Annotated[list[DatasetSpec], Field(min_length=1)]

    # Set by load_manifest: where the file was and its sha256, for provenance.
    path: str | None = Field(default=None, exclude=True)
    sha256: str | None = Field(default=None, exclude=True)

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, value: Any) -> Any:
        # Literal[1] alone accepts True and 1.0 (they compare equal to 1).
        if type(value) is not int:
            raise ValueError("unsupported manifest version")  # explain adds the value
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"must be a cron expression such as '0 3 * * *' (minute hour "
                             f"day-of-month month day-of-week); got {value!r}")
        return value

    def dataset(self, name: str) -> DatasetSpec:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        known = ", ".join(d.name for d in self.datasets)
        raise KeyError(f"no dataset named {name!r} in manifest {self.name!r} (known: {known})")

    def encryption_of(self, dataset: DatasetSpec) -> EncryptSpec | None:
        """The dataset's effective encryption: its own fields over the manifest's
        ``keys``; None when the dataset is not encrypted."""
        own = dataset.encrypt
        if own is None:
            return None
        keys = self.keys or KeysSpec()
        if own.recipients or own.recipients_file:
            recipients = {"recipients": own.recipients, "recipients_file": own.recipients_file}
        else:
            recipients = {"recipients": keys.recipients, "recipients_file": keys.recipients_file}
        return own.model_copy(update={**recipients, "identity": own.identity or keys.identity})


# Fields load_manifest sets; a manifest that writes them is as wrong as any unknown key.
_NOT_FROM_FILE = ("path", "sha256")


# --- loading -------------------------------------------------------------------------



def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load and validate a manifest; raise ManifestError listing every problem.

    Relative local URLs (and a relative ledger) are resolved against the manifest's
    own directory, so a manifest means the same thing whatever directory it is run
    from.
    """
    file = Path(path)
    shown = str(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ManifestError(shown, [f"{shown}: file not found; check the path"]) from None
    except OSError as exc:
        raise ManifestError(shown, [f"{shown}: cannot read: {exc.strerror}"]) from None
    return parse_manifest(raw, shown, base_dir=file.resolve().parent)


def parse_manifest(raw: bytes | str, shown: str, base_dir: Path | None = None) -> Manifest:
    """Parse manifest text; ``shown`` names it in errors, ``base_dir`` anchors relative paths."""
    import hashlib

    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise ManifestError(shown, [
                f"{shown}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the "
                "manifest as UTF-8"]) from None
        digest = hashlib.sha256(raw).hexdigest()
    else:
        text = raw
        digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ManifestError(shown, [yaml_error(exc, shown)]) from None
    if root is None:
        raise ManifestError(shown, [
            f"{shown}:1: (top level): the manifest is empty; see docs/MANIFEST.md"])
    if not isinstance(root, yaml.MappingNode):
        got = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        raise ManifestError(shown, [
            f"{shown}:{root.start_mark.line + 1}: (top level): the manifest must be a mapping "
            f"of keys (version, name, datasets, ...), not {got}"])

    lines, problems = index_lines(root, shown)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # e.g. a list used as a key, already reported above
        problems.append((0, yaml_error(exc, shown)))
        raise ManifestError(shown, finish(problems)) from None

    def at(loc: Path_) -> tuple[int, str]:
        line = line_for(loc, lines)
        return line, f"{shown}:{line}: {dotted(loc)}"

    secrets = list(find_secrets(data))
    for loc, msg in secrets:
        line, where = at(loc)
        problems.append((line, f"{where}: {msg}"))
    secret_locs = [loc for loc, _ in secrets]
    for key in _NOT_FROM_FILE:
        if key in data:
            line, where = at((key,))
            problems.append((line, f"{where}: {UNKNOWN_KEY}"))
    data = {k: v for k, v in data.items() if k not in _NOT_FROM_FILE}
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "invalid_key" or "[key]" in loc:
                continue  # a key that is not text: reported by index_lines
            hide = any(loc[:len(s)] == s or s[:len(loc)] == loc for s in secret_locs)
            line, where = at(loc)
            problems.append((line, f"{where}: {explain(err, hide)}"))
    if manifest is not None:
        # Judge locations as they will be used: relative paths already resolved.
        manifest = _resolve_relative_urls(manifest, base_dir) if base_dir else manifest
        for loc, msg in _semantic_problems(manifest):
            line, where = at(loc)
            problems.append((line, f"{where}: {msg}"))
    if problems:
        raise ManifestError(shown, finish(problems))
    assert manifest is not None
    return manifest.model_copy(update={"path": shown, "sha256": digest})


def _semantic_problems(manifest: Manifest) -> Iterator[tuple[Path_, str]]:
    known = set(fsspec.available_protocols()) | set(fsspec.registry)  # + runtime plugins
    seen: dict[str, int] = {}
    for i, dataset in enumerate(manifest.datasets):
        if dataset.name in seen:
            yield ("datasets", i, "name"), (
                f"dataset name {dataset.name!r} is already used by datasets[{seen[dataset.name]}]"
            )
        seen.setdefault(dataset.name, i)
        for side in ("source", "destination"):
            url = getattr(dataset, side).url
            problem = _url_problem(url, known)
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
        storage_class = dataset.destination.storage_class
        url = dataset.destination.url
        protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
        store, classes = ("S3", S3_STORAGE_CLASSES) if protocol in ("s3", "s3a") else \
            ("GCS", tuple(tiers_of(protocol) or ())) if protocol in ("gs", "gcs") else ("", ())
        if storage_class is not None and not classes:
            yield ("datasets", i, "destination", "storage_class"), (
                "only S3 destinations have storage classes, and GCS destinations too; remove "
                "it, or use an s3:// or gs:// destination")
        elif storage_class is not None and storage_class not in classes:
            yield ("datasets", i, "destination", "storage_class"), (
                f"unknown {store} storage class {storage_class!r}; one of {', '.join(classes)}")
        if dataset.source.storage_class is not None:
            yield ("datasets", i, "source", "storage_class"), (
                "is for destinations only (the class objects are written in)")
        yield from _tabular_problems(manifest, dataset, i)
        yield from _lifecycle_problems(dataset, i, known)
        both = [p for p in dataset.exclude if p in set(dataset.include)]
        if both:
            yield ("datasets", i, "exclude"), (
                f"{', '.join(repr(p) for p in both)} is both included and excluded; exclude "
                "wins, so remove it from one of the lists")


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


def _lifecycle_problems(dataset: DatasetSpec, i: int,
                        known: set[str]) -> Iterator[tuple[Path_, str]]:
    delta = dataset.destination.format == "delta"
    protocol = dataset.destination.url.split("://", 1)[0].lower() \
        if "://" in dataset.destination.url else "file"
    tiers = tiers_of(protocol)
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
        if rule.location is not None:
            problem = _url_problem(rule.location.url, known)
            if problem:
                yield (*at, "location", "url"), problem
            elif comparable_url(rule.location.url).startswith(
                    comparable_url(dataset.destination.url)):
                yield (*at, "location", "url"), (
                    "lies inside the destination; a cold location must be outside it")
    ordered = sorted((r.after, j, r.tier) for j, r in enumerate(dataset.lifecycle)
                     if r.tier is not None and tiers is not None and r.tier in tiers)
    for (_, _, warmer), (_, j, colder) in itertools.pairwise(ordered):
        if tiers is not None and tiers[colder].rank < tiers[warmer].rank:
            yield ("datasets", i, "lifecycle", j, "tier"), (
                f"moves objects back from {warmer} to the warmer {colder}; later rules must "
                "name colder tiers")


def _keys_problems(keys: KeysSpec, at: Path_) -> Iterator[tuple[Path_, str]]:
    """Each recipient where it is written: inline ones parse, a recipients file reads."""
    from .crypto import InvalidKey, X25519Recipient, load_recipients

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


def _url_problem(url: str, known: set[str]) -> str | None:
    if any(c in url for c in "\n\r\t\0"):
        return "contains control characters"
    if "://" not in url:
        return None  # a local path
    scheme = url.split("://", 1)[0].lower()
    if not re.match(r"^[a-z][a-z0-9+.-]*$", scheme):
        return ("is not a valid URL: the part before '://' must be a scheme such as s3, gs "
                "or file")
    if scheme not in known:
        return (f"unknown storage scheme {scheme!r}; use a local path or an fsspec URL such as "
                "s3://bucket/prefix/, gs://, az://, memory://")
    rest = url.split("://", 1)[1]
    if scheme in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss") and not rest.strip("/"):
        return f"{scheme}:// URL needs a bucket or container name"
    return None


def _local_path(url: str) -> str | None:
    """The filesystem path of a local location (plain path, file://, local://), else None."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return rest if scheme.lower() in ("file", "local") else None


def comparable_url(url: str) -> str:
    """A URL normalised for prefix tests: absolute local paths, one trailing slash."""
    local = _local_path(url)
    if local is None:
        return url.rstrip("/") + "/"
    return os.path.abspath(os.path.expanduser(local)).rstrip("/") + "/"


def _resolve_relative_urls(manifest: Manifest, base_dir: Path) -> Manifest:
    def resolve(url: str) -> str:
        local = _local_path(url)
        if local is None:
            return url
        path = Path(os.path.expanduser(local))
        if path.is_absolute() and local == str(path):
            return url
        if not path.is_absolute():
            path = Path(os.path.normpath(base_dir / path))
        prefix = url[:len(url) - len(local)]  # "", "file://" or "local://"
        trailing = "/" if url.endswith("/") and str(path) != "/" else ""
        return prefix + str(path) + trailing

    def fix(loc: LocationSpec) -> LocationSpec:
        return loc.model_copy(update={"url": resolve(loc.url)})

    def fix_keys(keys: K) -> K:
        update: dict[str, Any] = {}
        if keys.recipients_file:
            update["recipients_file"] = resolve(keys.recipients_file)
        if keys.identity:
            update["identity"] = keys.identity.model_copy(
                update={"file": resolve(keys.identity.file)})
        return keys.model_copy(update=update)

    def fix_rule(rule: LifecycleRule) -> LifecycleRule:
        return rule if rule.location is None else \
            rule.model_copy(update={"location": fix(rule.location)})

    datasets = [
        d.model_copy(update={
            "source": fix(d.source), "destination": fix(d.destination),
            "encrypt": fix_keys(d.encrypt) if d.encrypt is not None else None,
            "lifecycle": [fix_rule(r) for r in d.lifecycle]})
        for d in manifest.datasets
    ]
    keys = fix_keys(manifest.keys) if manifest.keys else None
    audit = manifest.audit
    if audit.signing_key:
        audit = audit.model_copy(update={"signing_key": resolve(audit.signing_key)})
    return manifest.model_copy(update={"datasets": datasets, "keys": keys, "audit": audit,
                                       "policies": [resolve(p) for p in manifest.policies],
                                       "ledger": resolve(manifest.ledger)})


K = TypeVar("K", KeysSpec, EncryptSpec)
