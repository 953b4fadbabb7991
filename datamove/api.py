"""The public Python API: load a manifest, plan, run, verify (docs/API.md).

Each function takes a validated :class:`~datamove.manifest.model.Manifest` and
returns a frozen, typed report (:class:`RunReport`, :class:`PlanReport`,
:class:`VerifyReport`, pipeline/results.py) whose ``to_dict()`` is exactly what
the CLI's ``--json`` prints and whose ``exit_code`` is the CLI's. Errors are
:class:`~datamove.errors.DatamoveError` subclasses carrying their exit code;
one object's failure is never an exception, only a count and a problem in the
report. The CLI only parses arguments and renders. The work is done by
:mod:`datamove.commands.copy` in a run session (:mod:`datamove.pipeline.session`).

What is stable: the names in ``__all__``, their parameters and the documented
fields of what they return. No module inside ``datamove`` imports this one
except the CLI (tests/test_architecture.py checks the layers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from datamove.commands import copy
from datamove.errors import (
    EXIT_BAD_INPUT,
    EXIT_OBJECTS_FAILED,
    EXIT_OK,
    EXIT_POLICY_REFUSED,
    BadInput,
    DatamoveError,
    KeyProblem,
    LocationUnreachable,
    ManifestError,
    PolicyRefused,
)
from datamove.ledger.tables import Ledger
from datamove.manifest.model import Manifest, load_manifest, manifest_from_dict
from datamove.pipeline import jobs
from datamove.pipeline.march import PlanItem
from datamove.pipeline.mirror import Mirror
from datamove.pipeline.progress import Progress
from datamove.pipeline.progress_events import (
    DatasetFinished,
    DatasetStarted,
    ListingDone,
    ObjectDone,
    ProgressEvent,
    Totals,
)
from datamove.pipeline.report import Report
from datamove.pipeline.results import (
    CommandReport,
    DatasetOutcome,
    PlanDataset,
    PlanReport,
    Problem,
    RunDataset,
    RunReport,
    VerifyDataset,
    VerifyReport,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OBJECTS_FAILED",
    "EXIT_OK",
    "EXIT_POLICY_REFUSED",
    "BadInput",
    "CommandReport",
    "DatamoveError",
    "DatasetFinished",
    "DatasetOutcome",
    "DatasetStarted",
    "KeyProblem",
    "ListingDone",
    "LocationUnreachable",
    "Manifest",
    "ManifestError",
    "ObjectDone",
    "OnEvent",
    "PlanDataset",
    "PlanReport",
    "PolicyRefused",
    "Problem",
    "Progress",
    "ProgressEvent",
    "RunDataset",
    "RunReport",
    "Totals",
    "VerifyDataset",
    "VerifyReport",
    "dry_run",
    "ledger_of",
    "load_manifest",
    "manifest_from_dict",
    "new_run_id",
    "plan",
    "run",
    "sync",
    "verify",
]

OnEvent = Callable[[ProgressEvent], Any]
"""A progress callback: called with each event on the thread that called run/verify."""

R = TypeVar("R", bound=CommandReport[Any])


def plan(manifest: Manifest, *, reverify: bool = False,
         datasets: list[str] | None = None, prices: list[str] | None = None,
         progress: Progress | None = None) -> PlanReport:
    """Count what a run would copy and skip, per dataset, without copying, with
    each dataset's cost estimate (docs/COST.md; ``PlanReport.costs``). ``prices``:
    price files merged onto the shipped table, after the manifest's ``prices:``;
    ``progress`` counts the objects planned as the listings are merged.

    Reads the listings and the ledger; writes nothing and takes no lock.
    """
    return _typed(PlanReport, copy.plan(manifest, reverify=reverify, datasets=datasets,
                                        prices=prices, progress=progress))


def run(manifest: Manifest, *, scheduler: str | None = None, reverify: bool = False,
        datasets: list[str] | None = None, progress: Progress | None = None,
        identity: str | None = None, policies: list[str] | None = None,
        on_event: OnEvent | None = None) -> RunReport:
    """Copy every dataset; verify each object per its mode; never raise for one object.

    Policies are evaluated first (docs/POLICIES.md): a denial raises PolicyRefused
    (exit 3) before anything moves. ``policies``: policy files, directories or
    globs instead of the default search. ``on_event``: called with each progress
    event (pipeline/progress_events.py) on this thread, in order; keep it quick, since the
    driver waits for it, and an exception it raises is logged, never the run's.
    ``progress``: an accountant or display of your own (the CLI's live line).
    """
    return _typed(RunReport, copy.execute(
        "run", manifest, scheduler=scheduler, reverify=reverify, datasets=datasets,
        progress=_listening(progress, on_event), identity=identity, policies=policies))


def verify(manifest: Manifest, *, scheduler: str | None = None,
           datasets: list[str] | None = None, progress: Progress | None = None,
           identity: str | None = None, on_event: OnEvent | None = None) -> VerifyReport:
    """Compare sources with destinations without copying: missing, extra, differing.

    Encrypted objects are decrypted and compared when an identity is configured
    (or given), otherwise their stored bytes are compared with the ledger.
    ``on_event`` as for :func:`run`.
    """
    return _typed(VerifyReport, copy.execute(
        "verify", manifest, scheduler=scheduler, reverify=False, datasets=datasets,
        progress=_listening(progress, on_event), identity=identity))


def ledger_of(manifest: Manifest) -> Ledger:
    """The manifest's ledger, to read its tables (``objects()``, ``runs()``, ...)."""
    return jobs.ledger_of(manifest)


def new_run_id() -> str:
    """A new run id (sortable by start time), for commands the CLI runs itself."""
    return jobs.new_run_id()


# --- quick commands (datamove copy / sync / check; docs: README "Quick commands") ---

def sync(manifest: Manifest, *, delete: bool = False, max_delete: int | None = None,
         scheduler: str | None = None, progress: Progress | None = None,
         policies: list[str] | None = None, on_event: OnEvent | None = None) -> RunReport:
    """:func:`run`, then (with ``delete``) delete destination objects the source does not
    have, once every copy verified and none failed; more than ``max_delete`` of them
    and nothing is deleted (the report's exit code is 3, ``refused`` says why).
    Deletions are counted as ``deleted`` in the report."""
    return _typed(RunReport, copy.execute(
        "run", manifest, scheduler=scheduler, reverify=False, datasets=None,
        progress=_listening(progress, on_event), policies=policies,
        mirror=Mirror(max_delete) if delete else None))


def dry_run(manifest: Manifest, show: Callable[[str, PlanItem], None]) -> PlanReport:
    """:func:`plan`, handing each planned object to ``show(dataset, item)``."""
    return _typed(PlanReport, copy.plan(manifest, on_item=show))


def _listening(progress: Progress | None, on_event: OnEvent | None) -> Progress | None:
    """The run's one accountant, with ``on_event`` among its listeners."""
    if on_event is None:
        return progress
    progress = progress if progress is not None else Progress()
    progress.listeners.append(on_event)
    return progress


def _typed(kind: type[R], report: Report) -> R:
    snapshot = report.snapshot()
    assert isinstance(snapshot, kind), (kind, type(snapshot))
    return snapshot
