"""The HTML reports: a run (``run --report``), a drill and ``audit residency``.

Each view turns a finished report object into one self-contained page
(html.py: escaping, tables, charts, the page and the write). Listings are
bounded (``html.MAX_ROWS`` rows; the rest counted), so a report of ten million
objects is as small as one of a thousand, like the report it comes from
(pipeline/report.py keeps the first problems and counts the rest).

The run's residency map says where this run's objects went: each dataset's
destination store, its region (asked of the store where it can be, as the
policy preflight does, else as declared in the manifest), the country of that
region, and what the run copied there. ``audit residency --report`` draws the
same map for every copy the ledger records.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator

from datamove.commands.drill import DrillReport
from datamove.commands.residency import ResidencyReport
from datamove.manifest.model import Manifest
from datamove.pipeline.report import (
    PLAN_KEYS,
    RUN_KEYS,
    VERIFY_KEYS,
    Report,
    human_bytes,
    iso_time,
)
from datamove.pipeline.throughput import Throughput
from datamove.policy.regions import RegionFacts, discover_all
from datamove.reports.html import (
    MAX_ROWS,
    Cell,
    bar_chart,
    cards,
    code,
    duration,
    facts,
    folded,
    line_chart,
    num,
    page,
    plain,
    section,
    size,
    table,
    text,
    write,
)
from datamove.reports.places import country_of
from datamove.stores.core import Location


def _place(region: str | None) -> str:
    """``eu-central-1 (Germany)``, ``us-foo-9``, or ``unknown``."""
    if not region:
        return "unknown"
    country = country_of(region)
    return f"{region} ({country})" if country else region


def _rate(nbytes: float, seconds: float | None) -> str:
    return f"{human_bytes(nbytes / seconds)}/s" if seconds and nbytes else "–"


def throughput_charts(sampler: Throughput, until: float | None) -> str:
    """The two charts over time, bytes and objects per second, from the first object
    on (the time before it, opening the ledger and starting the engine, is said in
    words); the axis counts seconds since the run started."""
    samples = sampler.samples(until)
    while samples and not (samples[0].bytes_per_second or samples[0].objects_per_second):
        samples.pop(0)
    if not samples:
        return '<p class="empty" data-chart="bytes">no objects finished</p>'
    first = samples[0].start
    note = (f"<p class=\"muted\">One point per {text(duration(sampler.width))}; the first "
            f"object started about {text(duration(first))} after the run did.</p>")
    return note + (
        line_chart("bytes", "Bytes per second",
                   [(s.start + s.seconds, s.bytes_per_second) for s in samples],
                   unit="", fmt=lambda v: f"{human_bytes(v)}/s", x_min=first)
        + line_chart("objects", "Objects per second",
                     [(s.start + s.seconds, s.objects_per_second) for s in samples],
                     unit="objects/s", x_min=first))


# --- run ---------------------------------------------------------------------------------

# per command: its count columns, the one that says work was done, and the residency
# columns (counts that are now, or would be, at the destination: new, already there)
_COLUMNS = {"run": (RUN_KEYS, "copied", (("copied", "repaired"), ("skipped", "verified"))),
            "verify": (VERIFY_KEYS, "matched", ((), ("matched", "differs"))),
            "plan": (PLAN_KEYS, "copy", (("copy",), ("skip", "verify")))}


def run_page(report: Report, manifest: Manifest | None = None) -> str:
    """``datamove run --report FILE.html``: outcome per dataset, throughput, residency,
    problems."""
    ended = report.ended or time.time()
    seconds = ended - report.started
    keys, moved, _ = _COLUMNS.get(report.command, _COLUMNS["run"])
    planned = report.command == "plan"
    total: Counter[str] = Counter()
    total_bytes: Counter[str] = Counter()
    for ds in report.datasets.values():
        total.update(ds.counts)
        total_bytes.update(ds.bytes)
    extra_keys = [k for k in ("not_attempted", "extra", "archived") if total[k] and k not in keys]
    body = facts([("manifest", report.manifest), ("run id", report.run_id),
                  ("engine", report.engine), ("started", iso_time(report.started)),
                  ("ended", iso_time(ended)), ("duration", duration(seconds)),
                  ("exit code", str(report.exit_code))])
    body += cards([(moved, f"{total[moved]:,}"), (f"bytes {moved}",
                                                   human_bytes(total_bytes[moved])),
                   *((k, f"{total[k]:,}") for k in keys if k != moved),
                   *(() if planned else (("average rate",
                                          _rate(total_bytes[moved], seconds)),))])
    spans = report.throughput.spans
    rows = []
    for name, ds in report.datasets.items():
        span = spans.get(name)
        took = span[1] - span[0] if span else None
        rows.append([code(name), code(ds.source), code(ds.destination),
                     *(num(ds.counts[k]) for k in (*keys, *extra_keys)),
                     size(ds.bytes[moved]), num(took or 0, duration(took)),
                     plain(_rate(ds.bytes[moved], took))])
    body += section("Per dataset", table(
        ["dataset", "source", "destination", *keys, *extra_keys, f"bytes {moved}",
         "duration", "rate"], rows, name="datasets"), anchor="datasets")
    body += section("Problems", _problems(report), anchor="problems")
    if not planned:
        body += section("Throughput over time", throughput_charts(report.throughput, ended),
                        anchor="throughput")
    body += section("Residency: where the objects " + ("would go" if planned else "went"),
                    _run_residency(report, manifest), anchor="residency")
    return page(f"datamove {report.command}: {report.manifest}",
                f"datamove {report.command}: {report.manifest}", _run_verdict(report, total),
                body, generated=time.time())


def _run_verdict(report: Report, total: Counter[str]) -> tuple[str, str]:
    if report.interrupted:
        return "warn", f"interrupted by {report.interrupted}"
    if report.command == "plan":
        return "ok", f"plan: {total['copy']:,} to copy, nothing copied"
    if report.exit_code == 0:
        return "ok", "succeeded"
    failed = total["failed"] + total["missing"] + total["differs"]
    stopped = f", {len(report.stopped)} dataset(s) stopped" if report.stopped else ""
    return "bad", f"{failed:,} failed{stopped} (exit {report.exit_code})"


def _destination_facts(report: Report, manifest: Manifest | None) -> dict[str, RegionFacts]:
    """Each dataset's destination region, asked of the store once per bucket."""
    if manifest is None:
        return {}
    names, locations = [], []
    for spec in manifest.datasets:
        if spec.name in report.datasets:
            names.append(spec.name)
            locations.append(Location.of(spec.destination.url, spec.destination.options,
                                         spec.destination.region))
    return dict(zip(names, discover_all(locations), strict=True))


def _run_residency(report: Report, manifest: Manifest | None) -> str:
    found = _destination_facts(report, manifest)
    _, _, (new, old) = _COLUMNS.get(report.command, _COLUMNS["run"])
    planned = report.command == "plan"
    rows, per_region = [], Counter[str]()
    for name, ds in report.datasets.items():
        fact = found.get(name)
        region = fact.effective if fact else None
        added = sum(ds.counts[k] for k in new)
        there = sum(ds.counts[k] for k in old)
        per_region[_place(region)] += added + there
        rows.append([code(name), code(ds.destination), plain(region or "unknown", "nw"),
                     plain(country_of(region) or "–"),
                     plain(fact.how if fact else "no manifest", "muted"),
                     num(added), num(there), size(sum(ds.bytes[k] for k in new))])
    bars = [(place, count, f"{count:,} objects") for place, count in per_region.most_common()]
    now = "to copy" if planned else "copied now"
    return (bar_chart("regions", "Objects at their destination, per region", bars)
            + table(["dataset", "destination", "region", "country", "how known", now,
                     "already there", f"bytes {now}"], rows, name="residency"))


def _problems(report: Report) -> str:
    def lines() -> Iterator[list[Cell]]:
        for p in report.stop_lines() + report.problems[:MAX_ROWS]:
            yield [code(p.dataset), code(p.key), plain(p.status, "err"), plain(p.error)]

    total = report.problem_count + len(report.stopped)
    out = table(["dataset", "key", "status", "error"], lines(), name="problems", total=total,
                what="problems")
    warnings = [("policy warning", w) for w in report.policy_warnings] + \
        [("warning", w) for w in report.warnings[:MAX_ROWS]]
    if warnings:
        out += "<h3>Warnings</h3>" + table(
            ["kind", "message"], ([plain(k, "muted"), plain(w)] for k, w in warnings),
            name="warnings", total=report.warning_count + len(report.policy_warnings),
            what="warnings")
    return out


# --- drill -------------------------------------------------------------------------------

def drill_page(report: DrillReport) -> str:
    """``datamove drill --report FILE.html``: what was read back, verified, failed."""
    ended = report.ended or time.time()
    totals = report.totals()
    failures = report.failures
    checked = len(report.objects)
    read_back = sum(r.stored_size for r in report.objects if r.ok)
    recorded = sum(t["objects"] for t in totals.values())
    body = facts([("manifest", report.manifest), ("run id", report.run_id),
                  ("selection", _selection(report)), ("started", iso_time(report.started)),
                  ("ended", iso_time(ended)), ("duration", duration(ended - report.started)),
                  ("exit code", str(report.exit_code))])
    body += cards([("checked", f"{checked:,}"), ("restored and verified",
                                                 f"{checked - len(failures):,}"),
                   ("failed", f"{len(failures):,}"), ("bytes read back", human_bytes(read_back)),
                   ("coverage", f"{checked / recorded * 100:.1f} %" if recorded else "–")])
    rows = []
    for name, t in totals.items():
        coverage = t["coverage_objects"]
        rate = t["throughput_bytes_per_second"]
        eta = t["estimated_full_recovery_seconds"]
        rows.append([code(name), num(t["objects"]), size(t["bytes"]), num(t["drilled"]),
                     num(t["drilled"] - t["failed"]), num(t["failed"]),
                     num(coverage or 0, f"{(coverage or 0) * 100:.1f} %"),
                     num(rate or 0, f"{human_bytes(rate)}/s" if rate else "–"),
                     num(t["longest_restore_wait_seconds"],
                         duration(t["longest_restore_wait_seconds"])),
                     num(eta or 0, duration(eta))])
    body += section("Per dataset", table(
        ["dataset", "recorded", "recorded bytes", "checked", "verified", "failed", "coverage",
         "throughput", "longest restore wait", "est. full recovery"], rows, name="datasets"),
        anchor="datasets")
    body += section("Throughput over time", throughput_charts(report.throughput, ended),
                    anchor="throughput")
    body += section("Failures", table(
        ["dataset", "key", "tier", "error"],
        ([code(f.dataset), code(f.key), plain(f.tier), plain(f.error or "failed", "err")]
         for f in failures[:MAX_ROWS]), name="failures", total=len(failures), what="failures"),
        anchor="failures")
    body += section("Objects read back", folded(f"{checked:,} objects", table(
        ["dataset", "key", "tier", "bytes", "first byte", "total", "result"],
        ([code(r.dataset), code(r.key), plain(r.tier), size(r.stored_size),
          num(r.first_byte_seconds or 0, duration(r.first_byte_seconds)),
          num(r.seconds, duration(r.seconds)),
          plain("verified", "okt") if r.ok else plain("FAILED", "err")]
         for r in report.objects[:MAX_ROWS]), name="objects", total=checked, what="objects")),
        anchor="objects")
    verdict = ("ok", "passed") if not failures else ("bad", f"{len(failures):,} failed")
    return page(f"datamove drill: {report.manifest}", f"Restore drill: {report.manifest}",
                verdict, body, generated=time.time())


def _selection(report: DrillReport) -> str:
    s = report.selection
    parts = [f"{s.sample:g} %" if s.sample is not None else "",
             f"{s.count:,} per dataset" if s.count is not None else "",
             f"bucket {s.rotate[0]} of {s.rotate[1]}" if s.rotate else "",
             f"seed {s.seed!r}" if s.seed else ""]
    return ", ".join(p for p in parts if p) or "every recorded object"


# --- audit residency ---------------------------------------------------------------------

def residency_page(report: ResidencyReport) -> str:
    """``datamove audit residency --report FILE.html``: every recorded copy's region,
    per dataset and per region (with its country), and the copies that break a rule."""
    summary = report.summary()
    violations = report.violations
    by_region: dict[str | None, Counter[str]] = defaultdict(Counter)
    hows: dict[str | None, set[str]] = defaultdict(set)
    for c in report.copies:
        by_region[c.region][c.dataset] += 1
        hows[c.region].add(c.how)
    body = cards([("copies", f"{len(report.copies):,}"), ("datasets", f"{len(summary):,}"),
                  ("regions", f"{len(by_region):,}"),
                  ("outside the allowed regions", f"{len(violations):,}")])
    ordered = sorted(by_region.items(), key=lambda kv: -sum(kv[1].values()))
    bars = [(_place(region), sum(n.values()), f"{sum(n.values()):,} copies")
            for region, n in ordered]
    body += section("Map: copies per region", bar_chart("regions", "Copies per region", bars)
                    + table(["region", "country", "copies", "datasets", "how known"],
                            ([plain(region or "unknown", "nw"), plain(country_of(region) or "–"),
                              num(sum(n.values())),
                              plain(", ".join(f"{d}: {c:,}" for d, c in sorted(n.items()))),
                              plain("; ".join(sorted(hows[region])), "muted")]
                             for region, n in ordered), name="regions"), anchor="map")
    body += section("Per dataset", table(
        ["dataset", "copies", "regions", "rules", "outside allowed regions"],
        ([code(name), num(ds["copies"]),
          plain(", ".join(f"{_place(None if r == 'unknown' else r)}: {n:,}"
                          for r, n in sorted(ds["regions"].items()))),
          plain(", ".join(ds["rules"]) or "no regions rule selects it", "muted"),
          Cell(f'<span class="{"err" if ds["violations"] else "okt"}">'
               f'{ds["violations"]:,}</span>', ds["violations"], True)]
         for name, ds in summary.items()), name="datasets"), anchor="datasets")
    body += section("Copies outside the allowed regions", table(
        ["dataset", "key", "destination", "region", "how known", "rules broken"],
        ([code(c.dataset), code(c.key), code(c.destination_url), plain(c.region or "unknown", "nw"),
          plain(c.how, "muted"), plain(", ".join(c.violations), "err")]
         for c in violations[:MAX_ROWS]), name="violations", total=len(violations),
        what="copies"), anchor="violations")
    body += section("Every copy", folded(f"{len(report.copies):,} copies", table(
        ["dataset", "key", "region", "country", "verdict"],
        ([code(c.dataset), code(c.key), plain(c.region or "unknown", "nw"),
          plain(country_of(c.region) or "–"), _verdict_cell(c.violations, c.checked)]
         for c in report.copies[:MAX_ROWS]), name="copies", total=len(report.copies),
        what="copies")), anchor="copies")
    verdict = ("ok", "all copies where allowed") if not violations else \
        ("bad", f"{len(violations):,} outside the allowed regions")
    return page(f"datamove residency: {report.manifest}",
                f"Residency: {report.manifest}", verdict, body, generated=time.time())


def _verdict_cell(violations: tuple[str, ...], checked: tuple[str, ...]) -> Cell:
    if violations:
        return Cell(f'<span class="err">violates {text(", ".join(violations))}</span>', 2)
    return Cell('<span class="okt">ok</span>', 1) if checked else \
        Cell('<span class="muted">no rule</span>', 0)


def write_run(path: str, report: Report, manifest: Manifest | None = None) -> str:
    """``run --report FILE.html``: written whole or not at all; returns the path."""
    return write(path, run_page(report, manifest))


def write_drill(path: str, report: DrillReport) -> str:
    return write(path, drill_page(report))


def write_residency(path: str, report: ResidencyReport) -> str:
    return write(path, residency_page(report))
