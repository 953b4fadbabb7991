"""The copy commands: ``plan``, ``run`` and ``verify``.

Thin: parse, call one API function, render the report (options.finish). The API
and the pipeline are imported inside each command, never at the top: `datamove
--help` must not load them (tests/test_cli_startup.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from datamove.cli.options import (
    DATASET,
    HTML_REPORT,
    IDENTITY,
    JSON,
    MANIFEST,
    OPS,
    POLICIES,
    PROGRESS,
    SCHEDULER,
    datasets_or_all,
    finish,
    progress_of,
    write_html_report,
)

if TYPE_CHECKING:
    from datamove.pipeline.results import CommandReport


@click.command()
@MANIFEST
@JSON
@DATASET
@click.option("--reverify", is_flag=True, help="Count up-to-date objects as to re-verify.")
@click.option("--prices", "prices", multiple=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=str),
              help="Price file merged onto the shipped price table, after the manifest's "
                   "prices: (repeatable; docs/COST.md).")
@PROGRESS
def plan(manifest: str, as_json: bool, datasets: tuple[str, ...], reverify: bool,
         prices: tuple[str, ...], progress: bool) -> None:
    """Show what a run would copy and skip, per dataset, without copying, and
    estimate its cost: storage per month (and per lifecycle tier), requests and
    egress, from list prices (docs/COST.md)."""
    from datamove import api

    finish(lambda: api.plan(api.load_manifest(manifest), reverify=reverify,
                            datasets=datasets_or_all(datasets), prices=list(prices) or None,
                            progress=progress_of(progress, as_json)), as_json)


@click.command()
@MANIFEST
@JSON
@SCHEDULER
@DATASET
@PROGRESS
@IDENTITY
@POLICIES
@click.option("--dry-run", is_flag=True, help="Only plan (same as `datamove plan`).")
@click.option("--reverify", is_flag=True,
              help="Re-check up-to-date objects against their source and repair any that differ.")
@HTML_REPORT
@OPS
def run(manifest: str, as_json: bool, scheduler: str | None, datasets: tuple[str, ...],
        progress: bool, identity_file: str | None, policies: tuple[str, ...], dry_run: bool,
        reverify: bool, report_path: str | None) -> None:
    """Copy every dataset in MANIFEST; verify each object; never copy twice.

    Policies are checked first (`datamove policy check`): a denial ends the run
    with exit 3 before anything moves. Encrypted datasets need only their
    recipients; an identity is used to verify by decryption (verify: full,
    --reverify). --report FILE.html also writes an HTML report: outcome per
    dataset, throughput over time, where the objects went.
    """
    from datamove import api

    def go() -> CommandReport[Any]:
        loaded = api.load_manifest(manifest)
        if report_path:
            from datamove.reports.html import check_target

            check_target(report_path)  # before anything moves
        if dry_run:
            result = api.plan(loaded, reverify=reverify, datasets=datasets_or_all(datasets),
                              progress=progress_of(progress, as_json))
        else:
            result = api.run(loaded, scheduler=scheduler, reverify=reverify,
                             datasets=datasets_or_all(datasets),
                             progress=progress_of(progress, as_json),
                             identity=identity_file, policies=list(policies) or None)
        if report_path:
            from datamove.reports.views import write_run

            result = write_html_report(report_path,
                                       lambda: write_run(report_path, result, loaded), result)
        return result

    finish(go, as_json)


@click.command()
@MANIFEST
@JSON
@SCHEDULER
@DATASET
@PROGRESS
@IDENTITY
@OPS
def verify(manifest: str, as_json: bool, scheduler: str | None, datasets: tuple[str, ...],
           progress: bool, identity_file: str | None) -> None:
    """Compare sources and destinations without copying (missing, extra, differing).

    Encrypted objects are stream-decrypted and compared with the source when an
    identity is configured or given (nothing is written), otherwise their stored
    bytes are compared with the ledger. Exit 0 all match, 1 some differ, 2 bad
    input (including an identity that opens no object).
    """
    from datamove import api

    finish(lambda: api.verify(api.load_manifest(manifest), scheduler=scheduler,
                              datasets=datasets_or_all(datasets),
                              progress=progress_of(progress, as_json),
                              identity=identity_file), as_json)
