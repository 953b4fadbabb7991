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

import os
import re
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from datamove.errors import ManifestError
from datamove.manifest.checks import local_path, semantic_problems
from datamove.manifest.yaml_source import (
    UNKNOWN_KEY,
    compose,
    construct,
    dotted,
    explain,
    finish,
    index_lines,
    line_for,
    read_limited,
    size_problem,
    yaml_error,
)
from datamove.redact import Path_, find_secrets
from datamove.stores.parts import PART_BUFFERS
from datamove.tiers import parse_duration
from datamove.units import parse_size

DEFAULT_LEDGER = "./.datamove/ledger"
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
    # source: symbolic links in a local tree (docs/SECURITY.md): skip them (and
    # count them), follow them, or store each as <name>.rclonelink.
    links: Literal["skip", "follow", "copy-link"] = "skip"
    # Object stores: prefixes listed at once once a listing is longer than a page
    # (stores/prefixed.py); 1 lists sequentially.
    list_threads: Annotated[int, Field(strict=True, ge=1, le=64)] = 8
    # S3 sources: an S3 Inventory manifest.json (s3:// URL or local path) listing the
    # objects instead of ListObjectsV2 (stores/inventory.py).
    inventory: Annotated[str | None, Field(min_length=1)] = None
    # Tabular datasets (docs/MANIFEST.md, "Tabular datasets"): a destination
    # ``format: delta`` loads the source's rows into a Delta table; a source may
    # name its file format (parquet, csv, jsonl), otherwise file suffixes tell.
    format: Literal["files", "delta", "parquet", "csv", "jsonl"] | None = None
    partition_by: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    schema_mode: Literal["strict", "merge"] | None = None
    # Object fidelity (destinations; docs/MANIFEST.md, "Object attributes"): carry the
    # source's Content-Type and user metadata, set types by glob and metadata, and
    # S3 server-side encryption (stores/attributes.py, manifest/fidelity.py).
    carry_metadata: Annotated[bool, Field(strict=True)] = True
    content_type: dict[Annotated[str, Field(min_length=1)],
                       Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=dict)
    metadata: dict[Annotated[str, Field(min_length=1)], str] = Field(default_factory=dict)
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: Annotated[str | None, Field(min_length=1, max_length=2048)] = None


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

    @field_validator("since", mode="before")
    @classmethod
    def _since(cls, value: Any) -> Any:
        if value not in ("copied", "modified"):
            raise ValueError(f"must be copied (age since datamove copied the object, the "
                             f"default) or modified (since the source's modification time); "
                             f"got {value!r}")
        return value


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
    # Objects of one dataset failing in a row because their endpoint cannot be
    # reached, after which the dataset stops (pipeline/breaker.py).
    circuit_breaker: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 5
    part_size: Annotated[int, Field(strict=True, ge=5 * 1024 * 1024,
                                    le=5 * 1024**3)] = 16 * 1024 * 1024
    # Parts of one object held in memory while it uploads, all but one of them
    # on their way at once (stores/parts.py).
    part_buffers: Annotated[int, Field(strict=True, ge=1, le=64)] = PART_BUFFERS
    fsync: bool = False
    # A clear-text (tcp://) scheduler on another host, accepted (stores/transport.py).
    allow_insecure: Annotated[bool, Field(strict=True)] = False
    # Bytes per second read from sources by the whole run, split among the worker
    # processes (pipeline/throttle.py); None: no limit.
    bwlimit: Annotated[int | None, Field(ge=1)] = None

    @field_validator("bwlimit", mode="before")
    @classmethod
    def _bandwidth(cls, value: Any) -> Any:
        return value if value is None else parse_size(value)

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
    # Plain http:// to a KMS endpoint on another host (docs/MANIFEST.md, "Insecure transport").
    allow_insecure: Annotated[bool, Field(strict=True)] = False

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
    # Filters beside include/exclude (docs/MANIFEST.md, "Filters"; pipeline/filters.py):
    # sizes in bytes, ages against the source's modification time, a file of keys.
    min_size: Annotated[int | None, Field(ge=0)] = None
    max_size: Annotated[int | None, Field(ge=0)] = None
    min_age: timedelta | None = None
    max_age: timedelta | None = None
    files_from: Annotated[str | None, Field(min_length=1)] = None

    @property
    def is_table(self) -> bool:
        """A ``format: delta`` dataset: its rows load into a table (tabular/)."""
        return self.destination.format == "delta"

    @field_validator("min_size", "max_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return value if value is None else parse_size(value)

    @field_validator("min_age", "max_age", mode="before")
    @classmethod
    def _age(cls, value: Any) -> Any:
        return value if value is None else parse_duration(value)

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
    # A price file merged onto the shipped table for `datamove plan`'s cost estimates
    # (docs/COST.md); `--prices` is merged on top of it.
    prices: Annotated[str | None, Field(min_length=1)] = None
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

    # Every way of building a Manifest (Manifest(...), model_validate, model_validate_json)
    # runs the checks load_manifest runs (_check) and raises ManifestError. The loaders
    # run _check themselves, to place each problem at its file:line, and say so in the
    # validation context.
    @model_validator(mode="wrap")
    @classmethod
    def _every_check(cls, data: Any, handler: ModelWrapValidatorHandler[Manifest],
                     info: ValidationInfo) -> Manifest:
        if info.context and info.context.get(_CALLER_CHECKS):
            return handler(data)
        manifest, problems = _check(data, handler, None, keys_reported=False)
        if problems:
            raise ManifestError("Manifest", finish([(0, f"{dotted(loc)}: {msg}")
                                                    for loc, msg in problems]))
        assert manifest is not None
        return manifest

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

# Validation context key: the caller runs _check itself (see Manifest._every_check).
_CALLER_CHECKS = "datamove.manifest.caller_checks"


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
        raw = read_limited(file)  # a 50 GB file (or /dev/zero) is refused after 1 MiB
    except FileNotFoundError:
        raise ManifestError(shown, [f"{shown}: file not found; check the path"]) from None
    except OSError as exc:
        raise ManifestError(shown, [f"{shown}: cannot read: {exc.strerror}"]) from None
    return parse_manifest(raw, shown, base_dir=file.resolve().parent)


def parse_manifest(raw: bytes | str, shown: str, base_dir: Path | None = None) -> Manifest:
    """Parse manifest text; ``shown`` names it in errors, ``base_dir`` anchors relative paths."""
    import hashlib

    too_big = size_problem(raw, shown, "a manifest")
    if too_big:
        raise ManifestError(shown, [too_big])
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
        root = compose(text, shown, "a manifest")
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
        data = construct(root)
    except yaml.YAMLError as exc:  # e.g. a list used as a key, already reported above
        problems.append((0, yaml_error(exc, shown)))
        raise ManifestError(shown, finish(problems)) from None

    def at(loc: Path_) -> tuple[int, str]:
        line = line_for(loc, lines)
        return line, f"{shown}:{line}: {dotted(loc)}"

    return _validated(data, shown, at, base_dir, digest, problems, keys_reported=True)


def manifest_from_dict(data: dict[str, Any], *, base_dir: str | os.PathLike[str] | None = None,
                       shown: str = "<manifest>") -> Manifest:
    """Validate a manifest given as Python data (what YAML would load to), with every
    check :func:`load_manifest` runs; raise ManifestError listing every problem.

    ``base_dir`` anchors relative local paths (as a manifest file's directory does);
    without it they stay relative to the working directory. ``shown`` names the
    manifest in errors (``<manifest>: datasets[0].destination.url: ...``) and becomes
    ``Manifest.path``; ``sha256`` is that of the data's canonical JSON.
    """
    import hashlib
    import json

    if not isinstance(data, dict):
        raise ManifestError(shown, [f"{shown}: (top level): the manifest must be a mapping "
                                    f"of keys (version, name, datasets, ...), not "
                                    f"{type(data).__name__}"])
    try:
        canonical = json.dumps(data, sort_keys=True, default=str, ensure_ascii=False)
    except (TypeError, ValueError):  # keys that are not text: the models say where
        canonical = ""
    digest = hashlib.sha256(canonical.encode()).hexdigest()

    def at(loc: Path_) -> tuple[int, str]:
        return 0, f"{shown}: {dotted(loc)}"

    return _validated(data, shown, at, Path(base_dir) if base_dir is not None else None,
                      digest, [], keys_reported=False)


def _validated(data: dict[str, Any], shown: str, at: Callable[[Path_], tuple[int, str]],
               base_dir: Path | None, digest: str, problems: list[tuple[int, str]], *,
               keys_reported: bool) -> Manifest:
    """A manifest's data, from a file or a dict: fields that only loading sets, then
    _check; ``at`` places a problem (file:line, or the dotted field)."""
    for key in _NOT_FROM_FILE:
        if key in data:
            line, where = at((key,))
            problems.append((line, f"{where}: {UNKNOWN_KEY}"))
    manifest, found = _check({k: v for k, v in data.items() if k not in _NOT_FROM_FILE},
                             lambda d: Manifest.model_validate(d, context={_CALLER_CHECKS: True}),
                             base_dir, keys_reported=keys_reported)
    for loc, msg in found:
        line, where = at(loc)
        problems.append((line, f"{where}: {msg}"))
    if problems:
        raise ManifestError(shown, finish(problems))
    assert manifest is not None
    return manifest.model_copy(update={"path": shown, "sha256": digest})


def _check(data: Any, validate: Callable[[Any], Manifest], base_dir: Path | None, *,
           keys_reported: bool) -> tuple[Manifest | None, list[tuple[Path_, str]]]:
    """Every check of a manifest's data, in one place: inline secrets (never echoed),
    the models (``validate``), then, relative paths resolved against ``base_dir``, the
    semantic checks (checks.py). Returns the manifest (None if the models refused it)
    and each problem at its path. ``keys_reported``: keys that are not text were
    reported already (index_lines)."""
    secrets = list(find_secrets(data)) if isinstance(data, dict) else []
    problems = list(secrets)
    secret_locs = [loc for loc, _ in secrets]
    manifest: Manifest | None = None
    try:
        manifest = validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if keys_reported and (err["type"] == "invalid_key" or "[key]" in loc):
                continue  # a key that is not text: reported by index_lines
            hide = any(loc[:len(s)] == s or s[:len(loc)] == loc for s in secret_locs)
            problems.append((loc, explain(err, hide)))
    if manifest is not None:
        # Judge locations as they will be used: relative paths already resolved.
        manifest = _resolve_relative_urls(manifest, base_dir) if base_dir else manifest
        problems += semantic_problems(manifest)
    return manifest, problems


def _resolve_relative_urls(manifest: Manifest, base_dir: Path) -> Manifest:
    def resolve(url: str) -> str:
        local = local_path(url)
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
        update = {"url": resolve(loc.url)}
        if loc.inventory is not None:
            update["inventory"] = resolve(loc.inventory)
        return loc.model_copy(update=update)

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
            "lifecycle": [fix_rule(r) for r in d.lifecycle],
            "files_from": resolve(d.files_from) if d.files_from else None})
        for d in manifest.datasets
    ]
    keys = fix_keys(manifest.keys) if manifest.keys else None
    audit = manifest.audit
    if audit.signing_key:
        audit = audit.model_copy(update={"signing_key": resolve(audit.signing_key)})
    return manifest.model_copy(update={"datasets": datasets, "keys": keys, "audit": audit,
                                       "policies": [resolve(p) for p in manifest.policies],
                                       "prices": resolve(manifest.prices) if manifest.prices
                                       else None,
                                       "ledger": resolve(manifest.ledger)})


K = TypeVar("K", KeysSpec, EncryptSpec)
