"""The quick commands: ``datamove copy SRC DST``, ``sync SRC DST``, ``check SRC DST``.

No manifest: the flags become a one-dataset manifest (commands/quick.py) that goes
through the same API as ``datamove run`` and ``verify``; every copy is verified
and recorded in a ledger (``--ledger``, default the per-user state directory).
Flags follow rclone's spelling. As in every cli module, the API is imported inside
the command, never at the top (tests/test_cli_startup.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from datamove.cli.options import (
    HTML_REPORT,
    JSON,
    OPS,
    POLICIES,
    PROGRESS,
    RECIPIENTS_FILE_OPTS,
    SCHEDULER,
    call,
    close_ops,
    emit,
    key_value_pairs,
    progress_of,
    write_html_report,
)

VERIFY_MODES = ("size", "checksum", "full")
"""manifest.model.VerifyMode's values (tests/test_quick.py keeps them equal); the model
itself is not imported here, so ``--help`` stays fast."""


def _options(ctx: click.Context, param: click.Parameter,
             values: tuple[str, ...]) -> dict[str, Any]:
    """``--src-option KEY=VALUE`` (repeatable) as a store options mapping; VALUE is read
    as a YAML scalar (``true``, ``8``, text), as it would be in a manifest."""
    import yaml

    def scalar(text: str) -> Any:
        try:
            parsed = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            return text
        return parsed if isinstance(parsed, str | int | float | bool) else text

    return key_value_pairs(values, scalar)


def _shared(*, writes: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The arguments and flags every quick command has; ``writes``: copy and sync's too."""
    options = [
        click.argument("source", metavar="SRC"),
        click.argument("destination", metavar="DST"),
        click.option("--include", multiple=True, metavar="GLOB",
                     help="Only keys matching GLOB (repeatable; rclone glob syntax)."),
        click.option("--exclude", multiple=True, metavar="GLOB",
                     help="Leave out keys matching GLOB (repeatable)."),
        click.option("--min-size", metavar="SIZE",
                     help="Only objects at least this big (10M, 1.5GiB, 4096B ...)."),
        click.option("--max-size", metavar="SIZE", help="Only objects at most this big."),
        click.option("--min-age", metavar="DURATION",
                     help="Only objects modified at least this long ago (7d, 12h ...)."),
        click.option("--max-age", metavar="DURATION",
                     help="Only objects modified at most this long ago."),
        click.option("--files-from", metavar="FILE",
                     help="Only the keys listed in FILE, one per line."),
        click.option("--transfers", type=click.IntRange(1, 256), metavar="N",
                     help="Objects copied (or compared) at once: engine threads [default: 8]."),
        click.option("--verify", "verify_mode", type=click.Choice(VERIFY_MODES),
                     help="How each object is checked: size, checksum (default: a store "
                          "checksum when it can be trusted, else a read back) or full "
                          "(always read back)."),
        click.option("--src-option", "source_options", multiple=True, metavar="KEY=VALUE",
                     callback=_options,
                     help="A store option of SRC, as under source.options in a manifest "
                          "(repeatable; e.g. endpoint_url=http://host:9000)."),
        click.option("--dst-option", "destination_options", multiple=True,
                     metavar="KEY=VALUE", callback=_options,
                     help="A store option of DST (repeatable)."),
        click.option(*RECIPIENTS_FILE_OPTS, "encrypt_to", metavar="FILE",
                     help="Encrypt each object for the age recipients in FILE (age1... lines); "
                          "stored as KEY.age. check needs it too to compare such a DST."),
        click.option("--ledger", metavar="PATH|URL",
                     help="Where the ledger and audit log live [default: $DATAMOVE_LEDGER, "
                          "else $XDG_STATE_HOME/datamove/ledger, else "
                          "~/.local/state/datamove/ledger]."),
        JSON, SCHEDULER, PROGRESS,
    ]
    if writes:
        options += [
            click.option("--bwlimit", metavar="RATE",
                         help="Bandwidth limit for the whole run, bytes/s (10M, 1.5MiB ...)."),
            click.option("--dry-run", is_flag=True,
                         help="List each object that would be copied (or deleted), one per "
                              "line, and change nothing."),
            click.option("--signing-key", metavar="FILE",
                         help="Sign the audit log's checkpoints with this key "
                              "(`datamove audit keygen`), as audit.signing_key does."),
            POLICIES, HTML_REPORT,
        ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _spec(source: str, destination: str, flags: dict[str, Any], delete: bool = False) -> Any:
    from datamove.commands.quick import QuickSpec

    return QuickSpec(
        source=source, destination=destination, ledger=flags["ledger"],
        include=flags["include"], exclude=flags["exclude"], min_size=flags["min_size"],
        max_size=flags["max_size"], min_age=flags["min_age"], max_age=flags["max_age"],
        files_from=flags["files_from"], transfers=flags["transfers"],
        verify=flags["verify_mode"], bwlimit=flags.get("bwlimit"),
        signing_key=flags.get("signing_key"), encrypt_to=flags["encrypt_to"],
        source_options=flags["source_options"],
        destination_options=flags["destination_options"], delete=delete)


def _copy_or_sync(source: str, destination: str, flags: dict[str, Any], *,
                  delete: bool = False, max_delete: int | None = None) -> None:
    from datamove import api
    from datamove.commands.quick import dry_run_printer

    as_json, html = flags["as_json"], flags["report_path"]
    manifest = call(lambda: _spec(source, destination, flags, delete).manifest(), as_json)
    if html:
        from datamove.reports.html import check_target

        call(lambda: check_target(html), as_json)  # before anything moves
    if flags["dry_run"]:
        report = call(lambda: api.dry_run(manifest, dry_run_printer(click.echo, delete)),
                      as_json)
        report = _dry_run_tail(report, delete, max_delete)
    else:
        report = call(lambda: api.sync(manifest, delete=delete, max_delete=max_delete,
                                       scheduler=flags["scheduler"],
                                       progress=progress_of(flags["progress"], as_json),
                                       policies=list(flags["policies"]) or None), as_json)
    if html:
        from datamove.reports.views import write_run

        report = write_html_report(html, lambda: write_run(html, report, manifest), report)
    emit(report, as_json)


def _dry_run_tail(report: Any, delete: bool, max_delete: int | None) -> Any:
    """What a real sync would delete, and whether ``--max-delete`` would refuse it."""
    if not delete:
        return report
    extra = sum(ds.counts["extra"] for ds in report.datasets.values())
    listed_nothing = any(ds.counts["extra"] and not (ds.counts["copy"] + ds.counts["skip"]
                                                     + ds.counts["verify"]
                                                     + ds.counts["archived"])
                         for ds in report.datasets.values())
    refused = (f"; --max-delete {max_delete} would refuse it (nothing would be deleted)"
               if max_delete is not None and extra > max_delete else
               "; but the source listed no object: without --max-delete a real sync "
               "deletes nothing and exits 3"
               if listed_nothing and max_delete is None else "")
    return report.with_warning(f"--dry-run: {extra:,} object{'' if extra == 1 else 's'} "
                               f"would be deleted after the copies verified{refused}")


@click.command("copy")
@_shared(writes=True)
@OPS
def copy_command(source: str, destination: str, **flags: Any) -> None:
    """Copy SRC to DST without a manifest: verified, recorded, never twice.

    SRC and DST are local paths or store URLs (s3://, gs://, az://, sftp://, ...)
    as in a manifest. Objects only at DST are left alone. Exit 0 ok, 1 objects
    failed, 2 bad input, 3 refused by policy.
    """
    _copy_or_sync(source, destination, flags)


@click.command("sync")
@_shared(writes=True)
@click.option("--delete", is_flag=True,
              help="Also delete objects at DST that SRC does not have (within the filters), "
                   "once every copy verified and none failed.")
@click.option("--max-delete", type=click.IntRange(0), metavar="N",
              help="With --delete: refuse (exit 3, delete nothing) if more than N would go.")
@OPS
def sync_command(source: str, destination: str, delete: bool, max_delete: int | None,
                 **flags: Any) -> None:
    """Make DST a mirror of SRC: copy what is new or changed; with --delete, delete
    what only DST has.

    Deletions come last, only after every copy of the run verified and none
    failed; each is recorded in the ledger (status deleted) and the audit log
    (object.deleted). Objects the filters leave out are never deleted, nor
    datamove's own files. Exit 0 ok, 1 objects failed, 2 bad input, 3 refused
    (--max-delete, a policy).
    """
    if max_delete is not None and not delete:
        from datamove.cli.options import fail
        from datamove.errors import EXIT_BAD_INPUT

        fail("--max-delete limits --delete; give --delete too (sync without --delete "
             "deletes nothing)", EXIT_BAD_INPUT, flags["as_json"])
    _copy_or_sync(source, destination, flags, delete=delete, max_delete=max_delete)


@click.command("check")
@_shared(writes=False)
@OPS
def check_command(source: str, destination: str, **flags: Any) -> None:
    """Compare SRC with DST (size and checksum, as `datamove verify`): nothing is written.

    One line per difference, rclone check's combined format: `- KEY` only at SRC
    (missing at DST), `+ KEY` only at DST, `* KEY` differs, `! KEY` could not be
    compared; then the counts. Exit 0 identical, 1 they differ, 2 bad input.
    """
    from datamove import api

    as_json = flags["as_json"]
    manifest = call(lambda: _spec(source, destination, flags).manifest(), as_json)
    report = call(lambda: api.verify(manifest, scheduler=flags["scheduler"],
                                     progress=progress_of(flags["progress"], as_json)),
                  as_json)
    close_ops(report.to_dict())
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        sys.exit(report.exit_code)
    marks = {"missing": "-", "extra": "+", "differs": "*"}
    for problem in report.problems:
        click.echo(f"{marks.get(problem.status, '!')} {problem.key}")
    if report.problem_count > len(report.problems):
        click.echo(f"… and {report.problem_count - len(report.problems):,} more "
                   "(--json lists the counts)")
    total = {k: sum(ds.counts[k] for ds in report.datasets.values())
             for k in ("matched", "missing", "extra", "differs", "failed")}
    differences = total["missing"] + total["extra"] + total["differs"] + total["failed"]
    click.echo(f"{total['missing']:,} missing at {destination}, {total['extra']:,} only at "
               f"{destination}, {total['differs']:,} differ, {total['failed']:,} could not be "
               f"compared; {total['matched']:,} matching")
    click.echo(f"{differences:,} difference{'' if differences == 1 else 's'} found"
               if differences else
               "no differences found")
    sys.exit(report.exit_code)
