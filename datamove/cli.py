"""The ``datamove`` command: parse arguments, call one API function, render.

Exit codes (README.md, "Commands"): 0 ok, 1 objects failed or differ, 2 bad input,
3 refused by policy. With ``--json`` the last line of stdout is one JSON object
that always carries ``exit_code``, errors included.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__, api, queries
from .errors import EXIT_BAD_INPUT, DatamoveError
from .progress import progress_for
from .report import Report

MANIFEST = click.argument("manifest", type=click.Path(dir_okay=False, path_type=str))
JSON = click.option("--json", "as_json", is_flag=True,
                    help="Print one JSON summary object as the last line of stdout.")
SCHEDULER = click.option("--scheduler", metavar="tcp://HOST:PORT",
                         help="Run on an existing Dask scheduler instead of the embedded one.")
DATASET = click.option("--dataset", "datasets", multiple=True, metavar="NAME",
                       help="Only this dataset (repeatable).")
PROGRESS = click.option("--progress/--no-progress", default=True, show_default=True,
                        help="Live progress on stderr when it is a terminal.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="datamove")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Move datasets between stores, verified end to end."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


@main.command()
@MANIFEST
@JSON
@DATASET
@click.option("--reverify", is_flag=True, help="Count up-to-date objects as to re-verify.")
def plan(manifest: str, as_json: bool, datasets: tuple[str, ...], reverify: bool) -> None:
    """Show what a run would copy and skip, per dataset, without copying."""
    _finish(lambda: api.plan(api.load_manifest(manifest), reverify=reverify,
                             datasets=list(datasets) or None), as_json)


@main.command()
@MANIFEST
@JSON
@SCHEDULER
@DATASET
@PROGRESS
@click.option("--dry-run", is_flag=True, help="Only plan (same as `datamove plan`).")
@click.option("--reverify", is_flag=True,
              help="Re-check up-to-date objects against their source and repair any that differ.")
def run(manifest: str, as_json: bool, scheduler: str | None, datasets: tuple[str, ...],
        progress: bool, dry_run: bool, reverify: bool) -> None:
    """Copy every dataset in MANIFEST; verify each object; never copy twice."""
    def go() -> Report:
        loaded = api.load_manifest(manifest)
        if dry_run:
            return api.plan(loaded, reverify=reverify, datasets=list(datasets) or None)
        return api.run(loaded, scheduler=scheduler, reverify=reverify,
                       datasets=list(datasets) or None,
                       progress=progress_for(progress and not as_json))

    _finish(go, as_json)


@main.command()
@MANIFEST
@JSON
@SCHEDULER
@DATASET
@PROGRESS
def verify(manifest: str, as_json: bool, scheduler: str | None, datasets: tuple[str, ...],
           progress: bool) -> None:
    """Compare sources and destinations without copying (missing, extra, differing)."""
    _finish(lambda: api.verify(api.load_manifest(manifest), scheduler=scheduler,
                               datasets=list(datasets) or None,
                               progress=progress_for(progress and not as_json)), as_json)


def _call(action: Callable[[], Any], as_json: bool) -> Any:
    """Run an API call; a DatamoveError (or an unknown --dataset) becomes a message
    and its exit code."""
    try:
        return action()
    except DatamoveError as exc:
        _fail(str(exc), exc.exit_code, as_json)
    except KeyError as exc:  # an unknown --dataset name
        _fail(str(exc.args[0]) if exc.args else str(exc), EXIT_BAD_INPUT, as_json)


def _finish(action: Callable[[], Report], as_json: bool) -> None:
    """Run an API call; print its report; exit with its code."""
    report = _call(action, as_json)
    if as_json:
        click.echo(report.to_json())
    else:
        report.render(sys.stdout)
    sys.exit(report.exit_code)


def _fail(message: str, code: int, as_json: bool) -> Any:
    click.echo(f"datamove: error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}))
    sys.exit(code)


@main.command()
@MANIFEST
@JSON
@DATASET
def status(manifest: str, as_json: bool, datasets: tuple[str, ...]) -> None:
    """Done / pending / failed objects per dataset, from the ledger and a fresh plan.

    \b
    done      recorded in the ledger and unchanged: a run skips it
    pending   a run would copy it, or verify and record it
    failed    a run would copy it, and its latest ledger row says failed
    deleted at source: recorded, but no longer at the source
    (done + pending + failed = the objects at the source)

    Lists sources and destinations like `datamove plan`. With no ledger yet every
    object is pending. Exit 0 whatever the counts; 2 for bad input or an
    unreachable location.
    """
    _answer(lambda: queries.status(api.load_manifest(manifest),
                                   datasets=list(datasets) or None), as_json)


@main.command()
@MANIFEST
@JSON
@click.option("--limit", type=click.IntRange(min=0), default=queries.DEFAULT_HISTORY_LIMIT,
              show_default=True, metavar="N", help="Newest N runs (0: all).")
@click.option("--all-manifests", is_flag=True,
              help="Every run in the ledger, not only this manifest's (by name).")
def history(manifest: str, as_json: bool, limit: int, all_manifests: bool) -> None:
    """The runs recorded in the ledger, newest first.

    A run with no end row (killed, or still running) shows as "interrupted", with
    the counts of the objects it recorded. Exit 0, also when nothing is recorded
    yet; 2 for bad input.
    """
    _answer(lambda: queries.history(api.load_manifest(manifest), limit=limit,
                                    all_manifests=all_manifests), as_json)


@main.command()
@MANIFEST
@click.argument("key")
@JSON
@DATASET
def show(manifest: str, key: str, as_json: bool, datasets: tuple[str, ...]) -> None:
    """Every ledger row of object KEY across runs, oldest first: its provenance.

    KEY is relative to its dataset (as `plan` and the ledger show it); a full
    source or destination URL also works. All datasets of MANIFEST are searched
    unless --dataset is given. Exit 0 when rows are found; 1 when KEY is not
    recorded (not copied yet, or a typo: similar keys are suggested); 2 for bad
    input such as an unknown dataset.
    """
    _answer(lambda: queries.show(api.load_manifest(manifest), key,
                                 datasets=list(datasets) or None), as_json)


def _answer(action: Callable[[], Any], as_json: bool) -> None:
    """Run a ledger query; print it (JSON: one object, last line); exit with its code."""
    result = _call(action, as_json)
    if result.error:
        click.echo(f"datamove: {result.error}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        result.render(sys.stdout)
    sys.exit(result.exit_code)


if __name__ == "__main__":
    main()
