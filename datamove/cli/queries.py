"""The ledger queries: ``status``, ``history`` and ``show`` (commands/status.py).

They read the ledger and never write. Thin like every command module: the query
functions (which import pyarrow) are imported inside each command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from datamove.cli.options import DATASET, JSON, MANIFEST, call, datasets_or_all, emit
from datamove.commands import DEFAULT_HISTORY_LIMIT


def _answer(action: Callable[[], Any], as_json: bool) -> None:
    """Run a ledger query; print it (JSON: one object, last line); exit with its code."""
    result = call(action, as_json)
    if result.error:
        click.echo(f"datamove: {result.error}", err=True)
    emit(result, as_json)


@click.command()
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
    from datamove import api
    from datamove.commands import status as queries

    _answer(lambda: queries.status(api.load_manifest(manifest),
                                   datasets=datasets_or_all(datasets)), as_json)


@click.command()
@MANIFEST
@JSON
@click.option("--limit", type=click.IntRange(min=0), default=DEFAULT_HISTORY_LIMIT,
              show_default=True, metavar="N", help="Newest N runs (0: all).")
@click.option("--all-manifests", is_flag=True,
              help="Every run in the ledger, not only this manifest's (by name).")
def history(manifest: str, as_json: bool, limit: int, all_manifests: bool) -> None:
    """The runs recorded in the ledger, newest first.

    A run with no end row (killed, or still running) shows as "interrupted", with
    the counts of the objects it recorded. Exit 0, also when nothing is recorded
    yet; 2 for bad input.
    """
    from datamove import api
    from datamove.commands import status as queries

    _answer(lambda: queries.history(api.load_manifest(manifest), limit=limit,
                                    all_manifests=all_manifests), as_json)


@click.command()
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
    from datamove import api
    from datamove.commands import status as queries

    _answer(lambda: queries.show(api.load_manifest(manifest), key,
                                 datasets=datasets_or_all(datasets)), as_json)
