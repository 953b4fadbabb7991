"""The public Python API: plan, run, verify, load_manifest.

Each function takes a loaded :class:`~datamove.manifest.model.Manifest` and returns a
:class:`~datamove.pipeline.report.Report`; the CLI only parses arguments and renders.
The work is done by :mod:`datamove.commands.copy` in a run session
(:mod:`datamove.pipeline.session`); the other commands (``keys rotate``,
``archive``, ``restore``, ``drill``, ...) live in :mod:`datamove.commands`.

This module is a facade for callers outside the package: no module inside
``datamove`` imports it except the CLI (tests/test_architecture.py checks the
layers).
"""

from __future__ import annotations

from collections.abc import Callable

from datamove.commands import copy
from datamove.ledger.tables import Ledger
from datamove.manifest.model import Manifest, load_manifest
from datamove.pipeline import jobs
from datamove.pipeline.march import PlanItem
from datamove.pipeline.mirror import Mirror
from datamove.pipeline.progress import Progress
from datamove.pipeline.report import Report

__all__ = ["dry_run", "ledger_of", "load_manifest", "new_run_id", "plan", "run", "sync",
           "verify"]


def plan(manifest: Manifest, *, reverify: bool = False,
         datasets: list[str] | None = None, prices: list[str] | None = None,
         progress: Progress | None = None) -> Report:
    """Count what a run would copy and skip, per dataset, without copying, with
    each dataset's cost estimate (docs/COST.md). ``prices``: price files merged
    onto the shipped table, after the manifest's ``prices:``; ``progress`` counts
    the objects planned as the listings are merged."""
    return copy.plan(manifest, reverify=reverify, datasets=datasets, prices=prices,
                     progress=progress)


def run(manifest: Manifest, *, scheduler: str | None = None, reverify: bool = False,
        datasets: list[str] | None = None, progress: Progress | None = None,
        identity: str | None = None, policies: list[str] | None = None) -> Report:
    """Copy every dataset; verify each object per its mode; never raise for one object.

    Policies are evaluated first (docs/POLICIES.md): a denial raises PolicyRefused
    (exit 3) before anything moves. ``policies``: policy files, directories or
    globs instead of the default search.
    """
    return copy.execute("run", manifest, scheduler=scheduler, reverify=reverify,
                        datasets=datasets, progress=progress, identity=identity,
                        policies=policies)


def verify(manifest: Manifest, *, scheduler: str | None = None,
           datasets: list[str] | None = None, progress: Progress | None = None,
           identity: str | None = None) -> Report:
    """Compare sources with destinations without copying: missing, extra, differing.

    Encrypted objects are decrypted and compared when an identity is configured
    (or given), otherwise their stored bytes are compared with the ledger.
    """
    return copy.execute("verify", manifest, scheduler=scheduler, reverify=False,
                        datasets=datasets, progress=progress, identity=identity)


def ledger_of(manifest: Manifest) -> Ledger:
    """The manifest's ledger, to read its tables (``objects()``, ``runs()``, ...)."""
    return jobs.ledger_of(manifest)


def new_run_id() -> str:
    """A new run id (sortable by start time), for commands the CLI runs itself."""
    return jobs.new_run_id()


# --- quick commands (datamove copy / sync / check; docs: README "Quick commands") ---

def sync(manifest: Manifest, *, delete: bool = False, max_delete: int | None = None,
         scheduler: str | None = None, progress: Progress | None = None,
         policies: list[str] | None = None) -> Report:
    """:func:`run`, then (with ``delete``) delete destination objects the source does not
    have, once every copy verified and none failed; more than ``max_delete`` of them
    and nothing is deleted (the report's exit code is 3)."""
    return copy.execute("run", manifest, scheduler=scheduler, reverify=False, datasets=None,
                        progress=progress, policies=policies,
                        mirror=Mirror(max_delete) if delete else None)


def dry_run(manifest: Manifest, show: Callable[[str, PlanItem], None]) -> Report:
    """:func:`plan`, handing each planned object to ``show(dataset, item)``."""
    return copy.plan(manifest, on_item=show)
