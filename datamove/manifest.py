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
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import fsspec
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ManifestError

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


class EngineSpec(_Strict):
    """Where and how wide the work runs."""

    scheduler: str | None = None
    threads: Annotated[int, Field(ge=1, le=256)] = 8
    window: Annotated[int | None, Field(ge=1, le=100_000)] = None
    batch_objects: Annotated[int, Field(ge=1, le=100_000)] = 256
    batch_bytes: Annotated[int, Field(ge=1)] = 64 * 1024 * 1024
    retries: Annotated[int, Field(ge=0, le=20)] = 4
    part_size: Annotated[int, Field(ge=5 * 1024 * 1024, le=5 * 1024**3)] = 16 * 1024 * 1024
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


class DatasetSpec(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    source: LocationSpec
    destination: LocationSpec
    include: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    exclude: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    verify: VerifyMode = VerifyMode.checksum
    classification: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Manifest(_Strict):
    version: Literal[1]
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    ledger: Annotated[str, Field(min_length=1)] = DEFAULT_LEDGER
    engine: EngineSpec = Field(default_factory=EngineSpec)
    datasets: Annotated[list[DatasetSpec], Field(min_length=1)]

    # Set by load_manifest: where the file was and its sha256, for provenance.
    path: str | None = Field(default=None, exclude=True)
    sha256: str | None = Field(default=None, exclude=True)

    def dataset(self, name: str) -> DatasetSpec:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        known = ", ".join(d.name for d in self.datasets)
        raise KeyError(f"no dataset named {name!r} in manifest {self.name!r} (known: {known})")


# --- loading -------------------------------------------------------------------------

Path_ = tuple[str | int, ...]

# Option keys that carry credentials in fsspec backends (s3fs: key/secret/token,
# adlfs: account_key/sas_token/connection_string, gcsfs: token, ...). They belong in
# the environment or the provider chain, never in a manifest that gets committed.
_SECRET_KEY_RE = re.compile(
    r"(^|_)(key|secret|token|password|passwd|passphrase|credential|credentials|"
    r"sas|signature|connection_string|private)(_|$)|^(key|secret|token)$",
    re.IGNORECASE,
)
_SECRET_VALUE_RES = [
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a PEM private key"),
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+"), "an age secret key"),
    (re.compile(r"AccountKey=|SharedAccessSignature=", re.IGNORECASE), "an Azure credential"),
]
_SECRET_QUERY_PARAMS = {"sig", "signature", "x-amz-signature", "x-amz-credential", "token",
                        "access_token", "x-goog-signature", "sv"}
_NOT_SECRET_KEYS = {"region_name", "key_prefix"}


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load and validate a manifest; raise ManifestError listing every problem.

    Relative local URLs are resolved against the manifest's own directory, so a
    manifest means the same thing whatever directory it is run from.
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

    text = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else raw
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark else shown
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(shown, [f"{where}: YAML syntax error: {problem}"]) from None
    if root is None:
        raise ManifestError(shown, [f"{shown}:1: the manifest is empty; see docs/MANIFEST.md"])

    lines: dict[Path_, int] = {}
    problems: list[str] = []
    _index_lines(root, (), lines, problems, shown)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ManifestError(shown, [f"{shown}:1: the manifest must be a mapping of keys"])

    def at(loc: Path_) -> str:
        return f"{shown}:{_line_for(loc, lines)}: {_dotted(loc)}"

    problems.extend(f"{at(loc)}: {msg}" for loc, msg in _find_secrets(data))
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(f"{at(tuple(err['loc']))}: {_explain(err)}")
    if manifest is not None:
        problems.extend(f"{at(loc)}: {msg}" for loc, msg in _semantic_problems(manifest))
    if problems:
        raise ManifestError(shown, problems)
    assert manifest is not None
    resolved = _resolve_relative_urls(manifest, base_dir) if base_dir else manifest
    return resolved.model_copy(
        update={"path": shown, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    )


def _index_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int],
                 problems: list[str], shown: str) -> None:
    """Record the 1-based line of every key and item; flag duplicate keys."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append(f"{shown}:{key_node.start_mark.line + 1}: "
                                f"{_dotted((*path, key))}: duplicate key; keep only one")
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines, problems, shown)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines, problems, shown)


def _line_for(loc: Path_, lines: dict[Path_, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _explain(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key; check the spelling against docs/MANIFEST.md"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error" and err["loc"] == ("version",):
        return f"unsupported manifest version {err.get('input')!r}; this datamove reads version 1"
    if kind == "string_pattern_mismatch":
        return ("must start with a letter or digit and use only letters, digits, '.', '_' "
                "and '-' (at most 128 characters)")
    if kind == "enum":
        return f"{err.get('input')!r} is not one of: {err['ctx']['expected']}"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    got = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{message.lower()} (got {type(got).__name__} {got!r})"
    return message


def _walk(value: Any, path: Path_) -> Iterator[tuple[Path_, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def _find_secrets(data: dict[str, Any]) -> Iterator[tuple[Path_, str]]:
    """Inline credentials are refused wherever they appear; the value is never echoed."""
    advice = ("inline secrets are refused; supply credentials through the environment or "
              "the store's standard provider chain (docs/MANIFEST.md, \"Credentials\")")
    for path, value in _walk(data, ()):
        if not path:
            continue
        name = path[-1]
        in_options = "options" in path
        if in_options and isinstance(name, str) and name.lower() not in _NOT_SECRET_KEYS \
                and _SECRET_KEY_RE.search(name):
            yield path, f"looks like a credential ({name!r}); {advice}"
            continue
        if isinstance(value, str):
            for pattern, what in _SECRET_VALUE_RES:
                if pattern.search(value):
                    yield path, f"contains {what}; {advice}"
                    break
            else:
                if name == "url":
                    yield from ((path, f"{m}; {advice}") for m in _url_secret_problems(value))


def _url_secret_problems(url: str) -> Iterator[str]:
    if "://" not in url:
        return
    parts = urlsplit(url)
    if parts.password or (parts.username and parts.scheme not in ("file", "local")
                          and "@" in parts.netloc and ":" in parts.netloc.split("@")[0]):
        yield "the URL embeds a password"
    for key, _ in parse_qsl(parts.query):
        if key.lower() in _SECRET_QUERY_PARAMS:
            yield f"the URL carries a signed or secret query parameter ({key!r})"


def _semantic_problems(manifest: Manifest) -> Iterator[tuple[Path_, str]]:
    known = set(fsspec.available_protocols())
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
        src, dst = _comparable(dataset.source.url), _comparable(dataset.destination.url)
        if src == dst:
            yield ("datasets", i, "destination", "url"), "is the same location as the source"
        elif dst.startswith(src.rstrip("/") + "/"):
            yield ("datasets", i, "destination", "url"), (
                "lies inside the source; a copy would include its own output. Choose a "
                "destination outside the source"
            )
        if set(dataset.include) & set(dataset.exclude):
            yield ("datasets", i, "exclude"), "a pattern is both included and excluded"


def _url_problem(url: str, known: set[str]) -> str | None:
    if any(c in url for c in "\n\r\t\0"):
        return "contains control characters"
    if "://" not in url:
        return None  # a local path
    scheme = url.split("://", 1)[0].lower()
    if not re.match(r"^[a-z][a-z0-9+.-]*$", scheme):
        return f"{url!r} is not a valid URL"
    if scheme not in known:
        return (f"unknown storage scheme {scheme!r}; use a local path or an fsspec URL such as "
                "s3://bucket/prefix/, gs://, az://, memory://")
    rest = url.split("://", 1)[1]
    if scheme in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss") and not rest.strip("/"):
        return f"{scheme}:// URL needs a bucket or container name"
    return None


def _comparable(url: str) -> str:
    if "://" in url and not url.startswith("file://"):
        return url.rstrip("/") + "/"
    return os.path.abspath(url.removeprefix("file://")).rstrip("/") + "/"


def _resolve_relative_urls(manifest: Manifest, base_dir: Path) -> Manifest:
    def fix(loc: LocationSpec) -> LocationSpec:
        url = loc.url
        if "://" in url:
            return loc
        path = Path(os.path.expanduser(url))
        resolved = path if path.is_absolute() else base_dir / path
        return loc.model_copy(update={"url": str(resolved) + ("/" if url.endswith("/") else "")})

    datasets = [
        d.model_copy(update={"source": fix(d.source), "destination": fix(d.destination)})
        for d in manifest.datasets
    ]
    ledger = manifest.ledger
    if "://" not in ledger and not Path(os.path.expanduser(ledger)).is_absolute():
        ledger = str(base_dir / ledger)
    return manifest.model_copy(update={"datasets": datasets, "ledger": ledger})
