"""The lifecycle commands: ``archive``, ``schedule``, ``restore`` and ``drill``.

Thin, like every command module: parse, call one function (commands/archive,
schedule, restore, drill), render; those are imported inside each command.
Registered on the root group by cli/__init__.py.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from datamove.cli.options import (
    DATASET,
    IDENTITY,
    JSON,
    MANIFEST,
    OPS,
    POLICIES,
    POLL,
    PROGRESS,
    RESTORE_DAYS,
    RESTORE_TIER,
    SCHEDULER,
    TIMEOUT,
    call,
    datasets_or_all,
    emit,
    parse_time,
    progress_of,
    write_html_report,
)

if TYPE_CHECKING:
    from datamove.commands.restore import Waiting


def _waiting(timeout: str, poll: str, tier: str, days: int) -> Waiting:
    """The archive-restore options (TIMEOUT, POLL, RESTORE_TIER, RESTORE_DAYS) as one value."""
    from datamove.commands.restore import Waiting, parse_seconds

    return Waiting(parse_seconds(timeout), parse_seconds(poll), days, tier)


@click.command()
@MANIFEST
@JSON
@click.option("--now", "now", metavar="TIMESTAMP",
              help="Judge ages as of this ISO 8601 time (default: the current time), e.g. "
                   "2027-03-01T00:00:00Z.")
@DATASET
@click.option("--dry-run", is_flag=True, help="Count what is due without moving anything.")
@POLICIES
@SCHEDULER
@PROGRESS
@OPS
def archive(manifest: str, as_json: bool, now: str | None, datasets: tuple[str, ...],
            dry_run: bool, policies: tuple[str, ...], scheduler: str | None,
            progress: bool) -> None:
    """Move objects that lifecycle rules say are due to colder tiers.

    Idempotent and safe on a schedule: moves only what is due, never twice (a
    second run at the same time waits for the first, then finds nothing due).
    Each move is verified (the stored sha256 is unchanged) and recorded in the
    ledger and the audit log. Exit 0 ok, 1 some moves failed, 2 bad input, 3
    refused by policy.
    """
    from datamove import api
    from datamove.commands.archive import archive as run_archive

    emit(call(lambda: run_archive(
        api.load_manifest(manifest), at=parse_time(now, "--now") if now else None,
        datasets=datasets_or_all(datasets), dry_run=dry_run, scheduler=scheduler,
        policies=list(policies) or None, progress=progress_of(progress, as_json)),
        as_json), as_json)


@click.command()
@MANIFEST
@JSON
@click.option("--count", default=5, show_default=True, help="How many next runs to list.")
def schedule(manifest: str, as_json: bool, count: int) -> None:
    """Print the next runs of the manifest's schedule and a ready crontab line."""
    from datamove import api
    from datamove.commands.schedule import schedule as next_runs

    emit(call(lambda: next_runs(api.load_manifest(manifest), count=count), as_json), as_json)


@click.command()
@MANIFEST
@JSON
@click.option("--dataset", required=True, metavar="NAME", help="The dataset to restore.")
@click.option("--prefix", default="", metavar="P", help="Only keys starting with P.")
@click.option("--to", "to_url", required=True, metavar="URL",
              help="Where to write the restored plaintext (a path or fsspec URL).")
@IDENTITY
@TIMEOUT
@POLL
@RESTORE_TIER
@RESTORE_DAYS
@click.option("--mode", "file_mode", default="0600", show_default=True, metavar="OCTAL",
              help="Permission bits of restored local files (private by default: restored "
                   "data may be secret).")
@PROGRESS
@OPS
def restore(manifest: str, as_json: bool, dataset: str, prefix: str, to_url: str,
            identity_file: str | None, timeout: str, poll: str, restore_tier: str,
            restore_days: int, file_mode: str, progress: bool) -> None:
    """Read a dataset back from any tier: restore archives, decrypt, verify, write.

    Every object is checked against the ledger (plaintext sha256 and size) before
    it appears under --to, atomically. Exit 0 all restored, 1 some failed or
    timed out, 2 bad input (including an identity that opens nothing).
    """
    from datamove import api
    from datamove.commands.restore import restore as run_restore

    emit(call(lambda: run_restore(
        api.load_manifest(manifest), dataset, to_url, prefix=prefix, identity=identity_file,
        waiting=_waiting(timeout, poll, restore_tier, restore_days),
        progress=progress_of(progress, as_json), mode=_octal_mode(file_mode)),
        as_json), as_json)


def _octal_mode(text: str) -> int:
    """``--mode 0640``: permission bits in octal, nothing beyond rwx for all three."""
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise click.BadParameter(f"{text!r} is not an octal mode such as 0600 or 0640",
                                 param_hint="--mode")
    return mode


@click.command()
@MANIFEST
@JSON
@DATASET
@click.option("--sample", type=float, metavar="PERCENT", help="Drill this share of objects.")
@click.option("--count", type=int, metavar="N", help="Drill N objects per dataset.")
@click.option("--rotate", "rotate_spec", metavar="n/t",
              help="Only rotation bucket n of t: drills 1/t … t/t cover every object once.")
@click.option("--seed", default="", metavar="S", help="Sampling seed (same seed, same picks).")
@click.option("--report", "report_path", metavar="FILE",
              help="Write the evidence: FILE.json / FILE.md / FILE.html by suffix, else "
                   ".json and .md.")
@click.option("--scratch", metavar="URL", help="Where to restore (default: a temporary "
                                                 "directory, removed afterwards).")
@IDENTITY
@TIMEOUT
@POLL
@RESTORE_TIER
@RESTORE_DAYS
@PROGRESS
@OPS
def drill(manifest: str, as_json: bool, datasets: tuple[str, ...], sample: float | None,
          count: int | None, rotate_spec: str | None, seed: str, report_path: str | None,
          scratch: str | None, identity_file: str | None, timeout: str, poll: str,
          restore_tier: str, restore_days: int, progress: bool) -> None:
    """Restore a deterministic sample into scratch space, verify it, and report.

    Per object: tier, bytes, time to first byte, total time, result; in total:
    coverage, throughput and the estimated time to recover the whole dataset.
    Exit 0 all read back and verified, 1 any failure, 2 bad input.
    """
    from datamove import api
    from datamove.commands.drill import Selection, parse_rotate, write_report
    from datamove.commands.drill import drill as run_drill

    html = bool(report_path and report_path.lower().endswith((".html", ".htm")))

    def go():  # type: ignore[no-untyped-def]
        selection = Selection(sample=sample, count=count, seed=seed,
                              rotate=parse_rotate(rotate_spec) if rotate_spec else None)
        if html:
            from datamove.reports.html import check_target

            check_target(report_path)  # before anything is restored
        result = run_drill(api.load_manifest(manifest), selection,
                           datasets=datasets_or_all(datasets), identity=identity_file,
                           scratch=scratch,
                           waiting=_waiting(timeout, poll, restore_tier, restore_days),
                           progress=progress_of(progress, as_json))
        if html:
            from datamove.reports.views import write_drill

            write_html_report(report_path, lambda: write_drill(report_path, result), result)
        elif report_path:
            for written in write_report(result, report_path):
                click.echo(f"datamove: drill report written to {written}", err=True)
        return result

    result = call(go, as_json)
    if as_json:
        emit(result, as_json)
    sys.stdout.write(result.to_markdown())
    sys.exit(result.exit_code)
