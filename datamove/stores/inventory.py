"""An S3 Inventory report as a dataset's source listing.

Listing a bucket of a hundred million objects takes a hundred thousand
ListObjectsV2 requests; S3 Inventory writes the same listing once a day as CSV
(gzip) or Parquet files described by a ``manifest.json`` (AWS S3 User Guide,
"Inventory"). A source with ``inventory: <manifest.json>`` is listed from those
files instead of the store: the copy itself still reads every object from the
bucket and verifies it as usual, so an object the report lists but the bucket no
longer has fails alone.

What is checked, so that a bad report ends the command with exit 2 before
anything moves (``check_inventory``, in the preflight): the manifest (and its
``manifest.checksum``, the MD5 of manifest.json, when present), its format
(CSV or Parquet; ORC is refused), its ``sourceBucket`` against the source URL's
bucket, and every data file: present, of the listed size and MD5 (hashed while
it is read), every row parsed. The listing (``inventory_entries``) reads and
verifies the files again.

Rows: ``Key`` (URL-encoded in CSV, ``+`` for a space), ``Size``,
``LastModifiedDate``, ``ETag``; with versions, only the latest version of each
key that is not a delete marker. Only keys under the source URL's prefix are
listed, relative to it (directory markers left out, as in a bucket listing).
Report files are not sorted as a whole, so the rows go through the external sort
(extsort.py: bounded memory, spilled to temporary files) and come out in UTF-8
byte order of the key; a key listed twice is refused.

Data files are read from the report's ``destinationBucket`` (with the source's
options, e.g. its ``endpoint_url``) when the manifest is on S3; for a local
manifest.json, from the nearest directory above it that holds the file's key (the
layout ``aws s3 sync`` of the inventory destination gives).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from datamove.errors import BadInput
from datamove.stores.base import Entry, Location
from datamove.stores.core import describe

if TYPE_CHECKING:
    import pyarrow as pa

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
CHUNK = 1024 * 1024

CSV_FIELDS = {"Bucket": "bucket", "Key": "key", "VersionId": "version_id",
              "IsLatest": "is_latest", "IsDeleteMarker": "is_delete_marker", "Size": "size",
              "LastModifiedDate": "last_modified_date", "ETag": "e_tag"}
"""CSV ``fileSchema`` names → the Parquet column names S3 Inventory uses."""

HINT = "point source.inventory at the manifest.json of an S3 Inventory report (CSV or Parquet)"

_checked: set[tuple[str, str]] = set()
"""(manifest URL, manifest MD5) already checked in this process: the plan does not
read a report a second time after the preflight read it."""


@dataclass(frozen=True)
class DataFile:
    key: str
    size: int
    md5: str


@dataclass(frozen=True)
class Report:
    """What a manifest.json says, and how to open its data files."""

    url: str
    md5: str
    file_format: str
    columns: tuple[str, ...]  # CSV: the file's columns, as Parquet names them
    files: tuple[DataFile, ...]
    open_file: Callable[[str], IO[bytes]]


def check_inventory(location: Location) -> None:
    """Read the whole report once as the listing will (every file verified, every row
    parsed, sorted, no key twice); raise BadInput (exit 2) on anything wrong, before
    a command moves anything. Once per report and process."""
    report = load_report(location)
    if (report.url, report.md5) in _checked:
        return
    for _ in _sorted_entries(report, location):
        pass
    _checked.add((report.url, report.md5))


def inventory_entries(location: Location) -> Iterator[Entry]:
    """The report's objects under the location, in UTF-8 byte order of the key."""
    return _sorted_entries(load_report(location), location)


def _sorted_entries(report: Report, location: Location) -> Iterator[Entry]:
    from datamove.extsort import sorted_batches

    previous: str | None = None
    for batch in sorted_batches(_batches(report, location), by="key"):
        keys, sizes, mtimes, etags = (batch.column(n).to_pylist()
                                      for n in ("key", "size", "mtime", "etag"))
        for key, size, mtime, etag in zip(keys, sizes, mtimes, etags, strict=True):
            if key == previous:
                raise BadInput(f"inventory {report.url}: key {key!r} is listed twice; a "
                               f"report lists each object once (with versions: once as "
                               f"the latest)")
            previous = key
            yield Entry(key=key, size=size, mtime=mtime, etag=etag)


# --- the manifest ---------------------------------------------------------------------

def load_report(location: Location) -> Report:
    """Read and check manifest.json (and manifest.checksum if there is one)."""
    url = location.inventory
    assert url is not None
    opener, sibling = _opener(url, location)
    name = url.rstrip("/").rsplit("/", 1)[-1]
    try:
        with opener(name) as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise BadInput(f"inventory {url}: no such manifest; {HINT}") from exc
    except Exception as exc:
        raise BadInput(f"inventory {url}: cannot read the manifest ({describe(exc)}); "
                       f"{HINT}") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BadInput(f"inventory {url}: larger than {MAX_MANIFEST_BYTES} bytes; {HINT}")
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    checksum = _read_optional(sibling, name.rsplit(".", 1)[0] + ".checksum")
    if checksum is not None and checksum.decode("ascii", "replace").strip().lower() != md5:
        raise BadInput(f"inventory {url}: the manifest does not match its checksum file "
                       f"(MD5 {md5}); it is damaged or was replaced. Fetch the report again")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"inventory {url}: not JSON ({exc}); {HINT}") from exc
    if not isinstance(doc, dict):
        raise BadInput(f"inventory {url}: not a manifest object; {HINT}")
    source_bucket, _ = location.bucket_and_prefix()
    if doc.get("sourceBucket") != source_bucket:
        raise BadInput(f"inventory {url}: a report of bucket {doc.get('sourceBucket')!r}, "
                       f"but the source is bucket {source_bucket!r} ({location.url})")
    file_format = str(doc.get("fileFormat", ""))
    if file_format == "ORC":
        raise BadInput(f"inventory {url}: ORC reports are not supported; configure the "
                       f"inventory with the CSV or Parquet format")
    if file_format not in ("CSV", "Parquet"):
        raise BadInput(f"inventory {url}: fileFormat {file_format!r}; {HINT}")
    columns: tuple[str, ...] = ()
    if file_format == "CSV":
        names = [n.strip() for n in str(doc.get("fileSchema", "")).split(",")]
        unknown = [n for n in names if not n]
        if unknown or not {"Bucket", "Key", "Size"} <= set(names):
            raise BadInput(f"inventory {url}: fileSchema {doc.get('fileSchema')!r} lacks "
                           f"Bucket, Key or Size; {HINT}")
        columns = tuple(CSV_FIELDS.get(n, n) for n in names)
    try:
        files = tuple(DataFile(str(f["key"]), int(f["size"]), str(f["MD5checksum"]).lower())
                      for f in doc["files"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"inventory {url}: 'files' must list key, size and MD5checksum of "
                       f"each data file ({exc!r}); {HINT}") from exc
    data_opener = _data_opener(url, doc, location)
    return Report(url, md5, file_format, columns, files, data_opener)


def _opener(url: str, location: Location) -> tuple[Callable[[str], IO[bytes]],
                                                    Callable[[str], IO[bytes]]]:
    """How to open the manifest and a file next to it, by name."""
    parent = url.rstrip("/").rsplit("/", 1)[0]
    if "://" in url and not url.startswith(("file://", "local://")):
        where = Location.of(parent, dict(location.options))
        return ((lambda name: where.backend.open_read(where, name)),
                (lambda name: where.backend.open_read(where, name)))
    directory = os.path.dirname(os.path.abspath(url.removeprefix("file://")
                                                .removeprefix("local://")))
    return ((lambda name: open(os.path.join(directory, name), "rb")),
            (lambda name: open(os.path.join(directory, name), "rb")))


def _read_optional(opener: Callable[[str], IO[bytes]], name: str) -> bytes | None:
    try:
        with opener(name) as f:
            return f.read(4096)
    except FileNotFoundError:
        return None


def _data_opener(url: str, doc: dict[str, Any], location: Location
                 ) -> Callable[[str], IO[bytes]]:
    if "://" in url and not url.startswith(("file://", "local://")):
        arn = str(doc.get("destinationBucket", ""))
        bucket = arn.rsplit(":", 1)[-1]
        if not arn.startswith("arn:aws:s3:::") or not bucket:
            raise BadInput(f"inventory {url}: destinationBucket {arn!r} is not an S3 bucket "
                           f"ARN (arn:aws:s3:::name); {HINT}")
        where = Location.of(f"{url.split('://', 1)[0]}://{bucket}", dict(location.options))
        return lambda key: where.backend.open_read(where, key)
    directory = os.path.dirname(os.path.abspath(url.removeprefix("file://")
                                                .removeprefix("local://")))

    def open_local(key: str) -> IO[bytes]:
        here = directory
        while True:
            candidate = os.path.join(here, key)
            if os.path.isfile(candidate):
                return open(candidate, "rb")
            if os.path.dirname(here) == here:
                raise FileNotFoundError(key)
            here = os.path.dirname(here)

    return open_local


# --- the data files -------------------------------------------------------------------

def _batches(report: Report, location: Location) -> Iterator[pa.RecordBatch]:
    """Every file's rows as (key, size, mtime, etag) batches, each file verified."""
    for data in report.files:
        with _verified_copy(report, data) as path:
            try:
                yield from _file_batches(report, data, path, location)
            except BadInput:
                raise
            except Exception as exc:
                raise BadInput(f"inventory {report.url}: data file {data.key} cannot be read "
                               f"as {report.file_format} ({describe(exc)}); {HINT}") from exc


@contextlib.contextmanager
def _verified_copy(report: Report, data: DataFile) -> Iterator[str]:
    """The data file copied to a temporary file while its MD5 is computed; raises
    BadInput unless size and MD5 are the manifest's."""
    suffix = "".join(c for c in data.key.rsplit("/", 1)[-1][-16:] if c.isalnum() or c in "._")
    fd, path = tempfile.mkstemp(prefix="datamove-inventory-", suffix=suffix)
    try:
        digest, size = hashlib.md5(usedforsecurity=False), 0
        try:
            with report.open_file(data.key) as source, os.fdopen(fd, "wb") as sink:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    sink.write(chunk)
        except FileNotFoundError as exc:
            raise BadInput(f"inventory {report.url}: data file {data.key} is missing; the "
                           f"report is incomplete or was moved. Fetch it again") from exc
        except BadInput:
            raise
        except Exception as exc:
            raise BadInput(f"inventory {report.url}: data file {data.key} cannot be read "
                           f"({describe(exc)})") from exc
        if size != data.size or digest.hexdigest() != data.md5:
            raise BadInput(f"inventory {report.url}: data file {data.key} is damaged: "
                           f"{size} bytes with MD5 {digest.hexdigest()}, the manifest says "
                           f"{data.size} bytes with MD5 {data.md5}. Fetch the report again")
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _file_batches(report: Report, data: DataFile, path: str,
                  location: Location) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    bucket, prefix = location.bucket_and_prefix()
    if report.file_format == "CSV":
        import pyarrow.csv as pcsv

        reader = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(column_names=list(report.columns),
                                                block_size=4 * CHUNK),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in report.columns},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
        batches: Iterator[pa.RecordBatch] = iter(reader)
    else:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(batch_size=65_536)
    row = 0
    for batch in batches:
        out = _rows(report, data, batch, row, bucket, prefix)
        row += batch.num_rows
        if out.num_rows:
            yield out


def _rows(report: Report, data: DataFile, batch: pa.RecordBatch, first_row: int,
          bucket: str, prefix: str) -> pa.RecordBatch:
    """One batch of report rows as (key, size, mtime, etag), relative to the prefix."""
    import pyarrow as pa

    csv = report.file_format == "CSV"
    names = batch.schema.names

    def column(name: str) -> list[Any]:
        return batch.column(name).to_pylist() if name in names else [None] * batch.num_rows

    if "key" not in names or "bucket" not in names:
        raise BadInput(f"inventory {report.url}: data file {data.key} has no bucket or key "
                       f"column (it has {', '.join(names)}); {HINT}")
    keys, sizes, buckets = column("key"), column("size"), column("bucket")
    mtimes, etags = column("last_modified_date"), column("e_tag")
    latest, deleted = column("is_latest"), column("is_delete_marker")
    out_keys: list[str] = []
    out_sizes: list[int] = []
    out_mtimes: list[float | None] = []
    out_etags: list[str | None] = []
    for i, raw in enumerate(keys):
        where = f"inventory {report.url}: data file {data.key}, row {first_row + i + 1}"
        if _flag(deleted[i]) is True or _flag(latest[i]) is False:
            continue  # a delete marker, or an older version of a key
        if buckets[i] != bucket:
            raise BadInput(f"{where}: bucket {buckets[i]!r}, not the source's {bucket!r}")
        if not raw:
            raise BadInput(f"{where}: no key")
        try:
            key = unquote_plus(raw, errors="strict") if csv else raw
        except UnicodeDecodeError as exc:
            raise BadInput(f"{where}: key {raw!r} is not UTF-8 once URL-decoded") from exc
        if not key.startswith(prefix):
            continue
        relative = key[len(prefix):]
        if not relative or relative.endswith("/"):
            continue  # the prefix itself or a "directory marker", as a listing skips them
        try:
            size = int(sizes[i])
        except (TypeError, ValueError) as exc:
            raise BadInput(f"{where}: size {sizes[i]!r} of {key!r} is not a number") from exc
        out_keys.append(relative)
        out_sizes.append(size)
        out_mtimes.append(_timestamp(mtimes[i], where))
        out_etags.append(str(etags[i]).strip('"') if etags[i] else None)
    return pa.record_batch({"key": pa.array(out_keys, pa.string()),
                            "size": pa.array(out_sizes, pa.int64()),
                            "mtime": pa.array(out_mtimes, pa.float64()),
                            "etag": pa.array(out_etags, pa.string())})


def _flag(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _timestamp(value: Any, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise BadInput(f"{where}: LastModifiedDate {value!r} is not a date") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()

