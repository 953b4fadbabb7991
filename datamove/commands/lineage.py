"""OpenLineage export of the ledger: ``datamove audit export MANIFEST --format openlineage``.

Every run recorded in the ledger's ``runs`` table becomes OpenLineage RunEvents
(spec 2-0-2, https://openlineage.io/spec/2-0-2/OpenLineage.json), in time order:

* ``START`` at the run's ``started_at``;
* ``COMPLETE`` at its ``ended_at`` when the ``end`` row's ``exit_code`` is 0,
  ``FAIL`` (with an ``errorMessage`` run facet) when it is anything else.
* A run with a ``start`` row and no ``end`` row gets its ``START`` only. Such a
  run was killed or is still running, and the ledger cannot tell which, so
  nothing is claimed about how it ended (no ``ABORT``): a later export, after
  the run ended, adds its terminal event under the same runId.

Identity:

* **Job**: namespace ``datamove://<manifest name>``, name the command that ran
  (``run`` or ``rotate``): the same manifest's copies and key rotations are two
  recurring jobs. Job facet ``jobType`` (processingType ``BATCH``, integration
  ``DATAMOVE``, jobType ``MIGRATION`` for ``run``, ``KEY_ROTATION`` for ``rotate``).
* **Run**: ``runId`` is ``uuid5(NAMESPACE_URL, "datamove:" + run_id)`` (OpenLineage
  wants a UUID; datamove's run ids are ``YYYYMMDDTHHMMSSZ-<8 hex>``), so the same
  run always exports the same runId. The datamove run id travels in the custom
  ``datamove_run`` facet. Run facets: ``processing_engine`` (name ``datamove``,
  version = the datamove that ran, openlineageAdapterVersion = the one exporting),
  ``datamove_run``, and ``errorMessage`` on ``FAIL``.
* **Datasets**: per manifest dataset the run touched, one input and one output.
  For ``run`` the input is the source and the output the destination; ``rotate``
  reads and rewrites the destination, so both are the destination. Namespace and
  name follow OpenLineage's naming: ``s3://<bucket>`` + the key prefix without
  slashes at either end (``/`` for a bucket root; ``s3a`` is named ``s3``,
  ``gcs`` ``gs``); a local path is ``file://<host>`` (the ``host`` of the run's
  row in the ledger, the driver) + the absolute path. The locations are the ones
  the run recorded (its ``end`` row's ``counts_json``), else the manifest's (when
  they match the run's object rows), else derived from the object rows' URLs.

Facets on both inputs and outputs: ``dataSource`` (name and uri = the namespace)
and ``ownership`` (``owners: [{name: <tags.owner>}]``, when the manifest's
dataset has an ``owner`` tag). Terminal events add, on outputs: the
``outputStatistics`` output facet (``rowCount`` = ``fileCount`` = objects written
by the run, i.e. rows with status ``copied``, ``repaired`` or ``rotated``;
``size`` = their ``stored_size`` sum), and the custom facets below. The standard
``storage`` facet is not used: its ``storageLayer`` names table formats
(iceberg, delta), and a datamove dataset is a tree of objects, not a table.

Custom facets (``_schemaURL`` = ``FACETS_SCHEMA_ID#/$defs/<Name>``, the JSON
Schema in :data:`FACETS_SCHEMA`):

* ``datamove_run`` (run facet): ``runId`` (datamove's), ``command``,
  ``manifestName``, ``manifestSha256``, ``user``, ``host``, ``engine``, and on the
  terminal event ``exitCode``.
* ``datamove_checksums`` (output facet, terminal events): ``objects`` and
  ``bytes`` (count and ``size`` sum of the run's *done* rows for the dataset:
  ``copied``, ``verified``, ``repaired``, ``rotated``), ``storedBytes``
  (``stored_size`` sum of those), ``statusCounts`` (rows per status, every status),
  and ``digest``: ``"sha256:" + hex`` of the sha256 over the done rows'
  ``[key, sha256, stored_sha256]`` as JSON lines. To recompute it from the
  ledger: take the ``objects`` rows with this ``run_id``, this ``dataset`` and a
  done status; sort the ``(key, sha256, stored_sha256)`` triples (strings compare
  in UTF-8 byte order, which is Python's ``str`` order; a null sorts as ``""``);
  for each, write ``json.dumps([key, sha256, stored_sha256], ensure_ascii=False,
  separators=(",", ":"))`` followed by ``"\\n"``, UTF-8 encoded (for these values
  this is the RFC 8785 canonical form; null stays ``null``); hash the
  concatenation. No rows hash the empty string.
* ``datamove_encryption`` (dataset facet, outputs, terminal events, only when the
  run recorded objects of the dataset): ``encrypted`` (the run's rows are age
  files), ``keyFingerprints`` (sorted union over its done rows) and
  ``previousKeyFingerprints`` (sorted union of the keys ``rotated`` rows had before).
* ``datamove_residency`` (dataset facet, outputs, terminal events):
  ``declaredRegion`` (the rows' ``region``; without rows, the manifest's
  ``destination.region``; null if none declared) and ``storageClasses`` (sorted
  distinct non-null ``storage_class`` of the done rows).

Memory and reads: ``runs`` is read whole (two small rows per run). ``objects``
is scanned once per run, filtered on ``run_id`` (files whose Delta log statistics
exclude the run are not opened; before compaction every file holds one run's
batch) and streamed in record batches, single-threaded like
:func:`datamove.ledger.tables.scan`. Only the done rows' ``(key, sha256, stored_sha256)``
triples of that one run are held, about 400 bytes each, until its digests are
computed; a run's small summary is kept from its ``START`` to its last event
(runs of one ledger do not overlap, so that is one run at a time). Nothing
grows with the number of runs beyond the runs table itself.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import pyarrow.compute as pc

from datamove import __version__
from datamove.errors import BadInput
from datamove.ledger.tables import DONE_STATUSES, OBJECTS, Ledger, batches
from datamove.manifest.model import DatasetSpec, Manifest

PRODUCER = f"https://github.com/datamove/datamove/tree/{__version__}"
CORE_SCHEMA_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
RUN_EVENT_SCHEMA_URL = f"{CORE_SCHEMA_ID}#/$defs/RunEvent"
FACETS_SCHEMA_ID = (f"https://github.com/datamove/datamove/blob/{__version__}"
                    "/docs/openlineage/datamove-facets.json")

_OL_FACETS = "https://openlineage.io/spec/facets"
STANDARD_FACETS = {  # facet key → the _schemaURL of its OpenLineage facet schema
    "jobType": f"{_OL_FACETS}/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
    "processing_engine":
        f"{_OL_FACETS}/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet",
    "errorMessage": f"{_OL_FACETS}/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
    "dataSource": f"{_OL_FACETS}/1-0-1/DatasourceDatasetFacet.json#/$defs/DatasourceDatasetFacet",
    "ownership": f"{_OL_FACETS}/1-0-1/OwnershipDatasetFacet.json#/$defs/OwnershipDatasetFacet",
    "outputStatistics": f"{_OL_FACETS}/1-0-2/OutputStatisticsOutputDatasetFacet.json"
                        "#/$defs/OutputStatisticsOutputDatasetFacet",
}
CUSTOM_FACETS = {  # facet key → its definition in FACETS_SCHEMA
    "datamove_run": "DatamoveRunFacet",
    "datamove_checksums": "DatamoveChecksumsOutputDatasetFacet",
    "datamove_encryption": "DatamoveEncryptionDatasetFacet",
    "datamove_residency": "DatamoveResidencyDatasetFacet",
}
WRITTEN_STATUSES = ("copied", "repaired", "rotated")  # the run put bytes at the destination
JOB_TYPES = {"run": "MIGRATION", "rotate": "KEY_ROTATION"}
MAX_ERRORS_SHOWN = 3
MAX_ERROR_CHARS = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _extends(core_def: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"allOf": [{"$ref": f"{CORE_SCHEMA_ID}#/$defs/{core_def}"},
                      {"type": "object", "properties": properties, "required": required}],
            "type": "object"}


_STRINGS = {"type": "array", "items": {"type": "string"}}
_COUNT = {"type": "integer", "minimum": 0}
FACETS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": FACETS_SCHEMA_ID,
    "title": "datamove custom OpenLineage facets",
    "$defs": {
        "DatamoveRunFacet": _extends("RunFacet", {
            "runId": {"type": "string", "description": "datamove's run id (runs.run_id)"},
            "command": {"type": "string", "description": "runs.command: run, rotate"},
            "manifestName": {"type": "string"},
            "manifestSha256": {"type": ["string", "null"]},
            "user": {"type": ["string", "null"]},
            "host": {"type": ["string", "null"]},
            "engine": {"type": ["string", "null"]},
            "exitCode": {"type": ["integer", "null"],
                         "description": "terminal events only: the run's exit code"},
        }, ["runId", "command", "manifestName"]),
        "DatamoveChecksumsOutputDatasetFacet": _extends("OutputDatasetFacet", {
            "objects": {**_COUNT, "description": "done rows of this run and dataset"},
            "bytes": {**_COUNT, "description": "sum of their source size"},
            "storedBytes": {**_COUNT, "description": "sum of their stored_size"},
            "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$",
                       "description": "sha256 of the sorted [key, sha256, stored_sha256] "
                                      "JSON lines of the done rows (docs: lineage)"},
            "statusCounts": {"type": "object", "additionalProperties": _COUNT},
        }, ["objects", "bytes", "storedBytes", "digest", "statusCounts"]),
        "DatamoveEncryptionDatasetFacet": _extends("DatasetFacet", {
            "encrypted": {"type": "boolean"},
            "keyFingerprints": _STRINGS,
            "previousKeyFingerprints": _STRINGS,
        }, ["encrypted", "keyFingerprints"]),
        "DatamoveResidencyDatasetFacet": _extends("DatasetFacet", {
            "declaredRegion": {"type": ["string", "null"]},
            "storageClasses": _STRINGS,
        }, ["declaredRegion", "storageClasses"]),
    },
}

_COLUMNS = ["dataset", "key", "status", "size", "sha256", "stored_size", "stored_sha256",
            "encrypted", "key_fingerprints", "previous_key_fingerprints", "storage_class",
            "region", "error", "recorded_at", "source_url", "destination_url"]


def run_uuid(run_id: str) -> str:
    """The OpenLineage runId of a datamove run: stable, so exports can be repeated."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "datamove:" + run_id))


def export_openlineage(manifest: Manifest, *,
                       run_ids: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """OpenLineage RunEvents for the runs in the manifest's ledger, in time order.

    One ``START`` per run and one ``COMPLETE`` (exit code 0) or ``FAIL`` (any other)
    per run that has an ``end`` row; a run without one (killed, or still running)
    gets its ``START`` only. ``run_ids`` limits the export to those runs; an id the
    ledger does not know is a :class:`BadInput`. See the module docstring for the
    event's content and facets.
    """
    ledger = Ledger(manifest.ledger, manifest.ledger_options)
    runs = _runs(ledger)
    if run_ids is not None:
        unknown = sorted(set(run_ids) - set(runs))
        if unknown:
            raise BadInput(f"ledger {ledger.url} has no run {', '.join(unknown)}; "
                           "`datamove history` lists the runs")
        runs = {rid: runs[rid] for rid in run_ids}
    objects = ledger.table(OBJECTS)  # None if no object was recorded yet

    timeline: list[tuple[datetime, int, str]] = []
    for rid, run in runs.items():
        timeline.append((run.started_at, 0, rid))
        if run.end is not None:
            timeline.append((run.ended_at, 1, rid))
    timeline.sort()
    pending = Counter(rid for _, _, rid in timeline)
    summaries: dict[str, _RunSummary] = {}  # runs between their first and last event
    for _, phase, rid in timeline:
        if rid not in summaries:
            summaries[rid] = _summarise(objects, rid)
        run = runs[rid]
        yield _event(manifest, run, summaries[rid], terminal=phase == 1)
        pending[rid] -= 1
        if not pending[rid]:
            del summaries[rid]


def write_openlineage(manifest: Manifest, out: TextIO, *,
                      run_ids: list[str] | None = None) -> int:
    """Write :func:`export_openlineage`'s events to ``out`` as JSON Lines; return the count."""
    count = 0
    for event in export_openlineage(manifest, run_ids=run_ids):
        out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count


# --- the ledger, per run -------------------------------------------------------------

@dataclass
class _Run:
    run_id: str
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None

    @property
    def row(self) -> dict[str, Any]:
        row = self.start or self.end
        assert row is not None
        return row

    @property
    def started_at(self) -> datetime:
        return self.row["started_at"] or (self.end or {}).get("ended_at")

    @property
    def ended_at(self) -> datetime:
        assert self.end is not None
        return self.end["ended_at"] or self.started_at

    def recorded_datasets(self) -> dict[str, dict[str, Any]]:
        """The ``end`` row's per-dataset counts (``run`` only; ``rotate`` records none)."""
        text = (self.end or {}).get("counts_json")
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


def _runs(ledger: Ledger) -> dict[str, _Run]:
    runs: dict[str, _Run] = {}
    for row in ledger.runs().to_pylist():
        run = runs.setdefault(row["run_id"], _Run(row["run_id"]))
        if row["event"] == "start" and run.start is None:
            run.start = row
        elif row["event"] == "end" and run.end is None:
            run.end = row
    return runs


@dataclass
class _DatasetSummary:
    statuses: Counter[str] = field(default_factory=Counter)
    done: int = 0
    done_bytes: int = 0
    stored_bytes: int = 0
    written: int = 0
    written_bytes: int = 0
    encrypted: bool = False
    fingerprints: set[str] = field(default_factory=set)
    previous_fingerprints: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)
    storage_classes: set[str] = field(default_factory=set)
    sample: dict[str, Any] | None = None  # a row with both URLs, to find the roots
    triples: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    digest: str = ""

    def add(self, row: dict[str, Any]) -> None:
        status = row["status"]
        self.statuses[status] += 1
        self.encrypted = self.encrypted or bool(row.get("encrypted"))
        if row.get("region"):
            self.regions.add(row["region"])
        if self.sample is None and row.get("source_url") and row.get("destination_url"):
            self.sample = row
        if status not in DONE_STATUSES:
            return
        self.done += 1
        self.done_bytes += row["size"] or 0
        self.stored_bytes += row["stored_size"] or 0
        if status in WRITTEN_STATUSES:
            self.written += 1
            self.written_bytes += row["stored_size"] or 0
        self.fingerprints.update(row.get("key_fingerprints") or ())
        if status == "rotated":
            self.previous_fingerprints.update(row.get("previous_key_fingerprints") or ())
        if row.get("storage_class"):
            self.storage_classes.add(row["storage_class"])
        self.triples.append((row["key"], row["sha256"], row["stored_sha256"]))

    def finish(self) -> None:
        self.digest = checksum_digest(self.triples)
        self.triples = []


def checksum_digest(triples: Iterable[tuple[str, str | None, str | None]]) -> str:
    """The ``datamove_checksums`` digest of done rows' (key, sha256, stored_sha256)."""
    digest = hashlib.sha256()
    for triple in sorted(triples, key=lambda t: (t[0], t[1] or "", t[2] or "")):
        line = json.dumps(list(triple), ensure_ascii=False, separators=(",", ":")) + "\n"
        digest.update(line.encode("utf-8"))
    return "sha256:" + digest.hexdigest()


@dataclass
class _RunSummary:
    datasets: dict[str, _DatasetSummary] = field(default_factory=dict)
    failed: int = 0
    first_failures: list[tuple[datetime, str, str, str]] = field(default_factory=list)


def _summarise(objects: Any, run_id: str) -> _RunSummary:
    """One streamed, single-threaded scan of the run's rows (see ledger.scan on threads)."""
    summary = _RunSummary()
    if objects is None:
        return summary
    have = {f.name for f in objects.schema().fields}
    columns = [c for c in _COLUMNS if c in have]  # a ledger older than some columns
    for batch in batches(objects, pc.field("run_id") == run_id, columns):
        for row in batch.to_pylist():
            summary.datasets.setdefault(row["dataset"], _DatasetSummary()).add(row)
            if row["status"] == "failed":
                summary.failed += 1
                summary.first_failures.append((row["recorded_at"] or _EPOCH, row["dataset"],
                                               row["key"], row.get("error") or "failed"))
        summary.first_failures = sorted(summary.first_failures)[:MAX_ERRORS_SHOWN]
    for ds in summary.datasets.values():
        ds.finish()
    return summary


# --- events --------------------------------------------------------------------------

def _event(manifest: Manifest, run: _Run, summary: _RunSummary, *,
           terminal: bool) -> dict[str, Any]:
    row = run.row
    command = row["command"] or "run"
    manifest_name = row["manifest_name"] or manifest.name
    run_facets: dict[str, Any] = {
        "processing_engine": _facet("processing_engine", name="datamove",
                                    version=row["datamove_version"] or "unknown",
                                    openlineageAdapterVersion=__version__),
        "datamove_run": _facet("datamove_run", runId=run.run_id, command=command,
                               manifestName=manifest_name,
                               manifestSha256=row["manifest_sha256"], user=row["user"],
                               host=row["host"], engine=row["engine"]),
    }
    event_type, event_time = "START", run.started_at
    if terminal:
        assert run.end is not None
        exit_code = run.end["exit_code"]
        run_facets["datamove_run"]["exitCode"] = exit_code
        event_type, event_time = ("COMPLETE" if exit_code == 0 else "FAIL"), run.ended_at
        if event_type == "FAIL":
            run_facets["errorMessage"] = _facet(
                "errorMessage", message=_failure_message(run, summary),
                programmingLanguage="PYTHON")
    specs = ({d.name: d for d in manifest.datasets} if manifest_name == manifest.name else {})
    inputs, outputs = [], []
    host = row["host"] or "localhost"
    for name, (source, destination) in _locations(run, summary, specs).items():
        spec = specs.get(name)
        inputs.append(_dataset(destination if command == "rotate" else source, host, spec))
        output = _dataset(destination, host, spec)
        ds = summary.datasets.get(name)
        if terminal:
            _add_results(output, ds or _DatasetSummary(digest=checksum_digest(())), spec,
                         has_rows=ds is not None)
        outputs.append(output)
    return {
        "eventType": event_type,
        "eventTime": _iso(event_time),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA_URL,
        "run": {"runId": run_uuid(run.run_id), "facets": run_facets},
        "job": {"namespace": f"datamove://{manifest_name}", "name": command,
                "facets": {"jobType": _facet("jobType", processingType="BATCH",
                                             integration="DATAMOVE",
                                             jobType=JOB_TYPES.get(command, "MIGRATION"))}},
        "inputs": inputs,
        "outputs": outputs,
    }


def _facet(key: str, **fields: Any) -> dict[str, Any]:
    url = STANDARD_FACETS.get(key) or f"{FACETS_SCHEMA_ID}#/$defs/{CUSTOM_FACETS[key]}"
    return {"_producer": PRODUCER, "_schemaURL": url, **fields}


def _add_results(output: dict[str, Any], ds: _DatasetSummary, spec: DatasetSpec | None,
                 *, has_rows: bool) -> None:
    output["outputFacets"] = {
        "outputStatistics": _facet("outputStatistics", rowCount=ds.written,
                                   fileCount=ds.written, size=ds.written_bytes),
        "datamove_checksums": _facet("datamove_checksums", objects=ds.done,
                                     bytes=ds.done_bytes, storedBytes=ds.stored_bytes,
                                     digest=ds.digest,
                                     statusCounts=dict(sorted(ds.statuses.items()))),
    }
    facets = output["facets"]
    if has_rows:
        facets["datamove_encryption"] = _facet(
            "datamove_encryption", encrypted=ds.encrypted,
            keyFingerprints=sorted(ds.fingerprints),
            previousKeyFingerprints=sorted(ds.previous_fingerprints))
    region = min(ds.regions) if ds.regions else (spec.destination.region if spec else None)
    facets["datamove_residency"] = _facet("datamove_residency", declaredRegion=region,
                                          storageClasses=sorted(ds.storage_classes))


def _failure_message(run: _Run, summary: _RunSummary) -> str:
    exit_code = (run.end or {}).get("exit_code")
    recorded = {name: counts.get("failed", 0)
                for name, counts in run.recorded_datasets().items()
                if isinstance(counts, dict) and counts.get("failed")}
    per_dataset = recorded or {name: ds.statuses["failed"]
                               for name, ds in summary.datasets.items()
                               if ds.statuses["failed"]}
    total = sum(per_dataset.values())
    text = f"datamove {run.row['command'] or 'run'} {run.run_id} ended with exit code {exit_code}"
    if total:
        text += (f": {total} object{'s' * (total != 1)} failed ("
                 + ", ".join(f"{name}: {n}" for name, n in per_dataset.items()) + ")")
    if total > summary.failed:
        text += f"; {total - summary.failed} of them have no ledger row (e.g. a broken listing)"
    if summary.first_failures:
        shown = [f"{dataset}/{key}: {error[:MAX_ERROR_CHARS]}"
                 for _, dataset, key, error in summary.first_failures]
        text += "; first failures: " + "; ".join(shown)
    return text


def _locations(run: _Run, summary: _RunSummary,
               specs: dict[str, DatasetSpec]) -> dict[str, tuple[str, str]]:
    """Source and destination URL per dataset the run touched, as the run knew them."""
    out: dict[str, tuple[str, str]] = {}
    for name, counts in run.recorded_datasets().items():
        if isinstance(counts, dict) and counts.get("source") and counts.get("destination"):
            out[name] = (counts["source"], counts["destination"])
    for name in sorted(set(summary.datasets) - set(out)):
        sample = summary.datasets[name].sample
        spec = specs.get(name)
        if sample is None:
            if spec is not None:
                out[name] = (spec.source.url, spec.destination.url)
            continue
        key = sample["key"]
        out[name] = (_root(sample["source_url"], key, spec.source.url if spec else None),
                     _root(sample["destination_url"], key,
                           spec.destination.url if spec else None))
    return out


def _root(url: str, key: str, hint: str | None) -> str:
    """The location an object URL lies under: the manifest's if it fits, else the URL
    up to the last ``/<key>`` (an encrypted object's URL ends in ``<key><suffix>``)."""
    if hint is not None and url.startswith(hint.rstrip("/") + "/"):
        return hint
    at = url.rfind("/" + key)
    return url[:at] if at > 0 else url


def dataset_name(url: str, host: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a location URL (OpenLineage Naming.md)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() in ("file", "local"):
        path = (rest if sep else url).rstrip("/") or "/"
        return f"file://{host}", path
    scheme = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}.get(scheme.lower(), scheme.lower())
    authority, _, path = rest.partition("/")
    return f"{scheme}://{authority}", path.strip("/") or "/"


def _dataset(url: str, host: str, spec: DatasetSpec | None) -> dict[str, Any]:
    namespace, name = dataset_name(url, host)
    facets: dict[str, Any] = {"dataSource": _facet("dataSource", name=namespace, uri=namespace)}
    owner = spec.tags.get("owner") if spec is not None else None
    if owner:
        facets["ownership"] = _facet("ownership", owners=[{"name": owner}])
    return {"namespace": namespace, "name": name, "facets": facets}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
