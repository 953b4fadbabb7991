"""Quick commands (``datamove copy``, ``sync``, ``check``): a manifest made from flags.

rclone users expect ``copy SRC DST`` without writing a file first. These commands
build the one-dataset :class:`Manifest` a user would have written, through the
same checks as a manifest file (``manifest_from_dict``: unknown fields,
secrets in URLs, a destination inside its source, ...), and then run it through
the same API as ``datamove run`` and ``verify``: there is no second copy engine.

The ledger of quick commands lives, unless ``--ledger`` (or ``$DATAMOVE_LEDGER``)
says otherwise, in the per-user state directory,
``$XDG_STATE_HOME/datamove/ledger`` (``~/.local/state/datamove/ledger``), like
rclone's own per-user files: one ledger for every quick command of the user,
outside any source or destination. Each SRC/DST pair is its own dataset there,
named ``quick-`` + 12 hex digits of the sha256 of the two URLs, so a rerun of the
same pair finds its rows and skips what it copied.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamove.errors import BadInput, ManifestError
from datamove.manifest.checks import comparable_url
from datamove.manifest.model import Manifest, manifest_from_dict
from datamove.pipeline.march import Action, PlanItem

QUICK_NAME = "quick"
"""The manifest name of every quick command (the audit log's origin name: one per ledger)."""
LEDGER_ENV = "DATAMOVE_LEDGER"
SHOWN = "command line"


def default_ledger() -> str:
    """``$DATAMOVE_LEDGER``, else ``$XDG_STATE_HOME/datamove/ledger``, else
    ``~/.local/state/datamove/ledger`` (the XDG default for per-user state)."""
    explicit = os.environ.get(LEDGER_ENV)
    if explicit:
        return explicit
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".local", "state")
    return os.path.join(state, "datamove", "ledger")


@dataclass(frozen=True)
class QuickSpec:
    """What the flags of a quick command say; ``manifest()`` turns it into a Manifest.

    Filters and ``bwlimit`` are passed through as the user wrote them: the manifest
    model parses and judges them (one parser for files and flags).
    """

    source: str
    destination: str
    ledger: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: str | None = None
    max_size: str | None = None
    min_age: str | None = None
    max_age: str | None = None
    files_from: str | None = None
    transfers: int | None = None
    verify: str | None = None
    bwlimit: str | None = None
    signing_key: str | None = None
    encrypt_to: str | None = None  # a recipients file: objects stored as age files (KEY.age)
    delete: bool = False  # sync --delete: SRC must not lie inside DST
    source_options: dict[str, Any] = field(default_factory=dict)
    destination_options: dict[str, Any] = field(default_factory=dict)

    def dataset_name(self) -> str:
        """The same for every run of this pair (relative local paths made absolute)."""
        pair = f"{_absolute(self.source)}\n{_absolute(self.destination)}"
        return "quick-" + hashlib.sha256(pair.encode()).hexdigest()[:12]

    def document(self) -> dict[str, Any]:
        """The manifest a user would have written (only the settings given)."""
        dataset: dict[str, Any] = {
            "name": self.dataset_name(),
            "source": {"url": self.source, "options": dict(self.source_options)},
            "destination": {"url": self.destination,
                            "options": dict(self.destination_options)},
        }
        if self.include:
            dataset["include"] = list(self.include)
        if self.exclude:
            dataset["exclude"] = list(self.exclude)
        if self.encrypt_to is not None:
            dataset["encrypt"] = {"recipients_file": self.encrypt_to}
        for name in ("min_size", "max_size", "min_age", "max_age", "files_from", "verify"):
            value = getattr(self, name)
            if value is not None:
                dataset[name] = value
        engine: dict[str, Any] = {}
        if self.transfers is not None:
            engine["threads"] = self.transfers
        if self.bwlimit is not None:
            engine["bwlimit"] = self.bwlimit
        doc: dict[str, Any] = {"version": 1, "name": QUICK_NAME,
                               "ledger": self.ledger or default_ledger(),
                               "datasets": [dataset]}
        if engine:
            doc["engine"] = engine
        if self.signing_key is not None:
            doc["audit"] = {"signing_key": self.signing_key}
        return doc

    def manifest(self) -> Manifest:
        """The validated manifest (BadInput naming the flag on any problem); relative
        local paths start at the current directory."""
        doc = self.document()
        try:
            manifest = manifest_from_dict(doc, base_dir=Path.cwd(), shown=SHOWN)
        except ManifestError as exc:
            raise BadInput("invalid arguments:\n" + "\n".join(
                f"  {_flag_words(problem)}" for problem in exc.problems)) from None
        # No file: no policies/ directory beside it is searched ($DATAMOVE_POLICIES
        # and --policies still apply).
        manifest = manifest.model_copy(update={"path": None})
        _refuse_ledger_inside(manifest)
        if self.delete:
            _refuse_source_inside_destination(manifest)
        return manifest


_FLAGS = {
    "datasets[0].source.url": "SRC", "datasets[0].destination.url": "DST",
    "datasets[0].source.options": "--src-option", "datasets[0].destination.options":
    "--dst-option", "datasets[0].include": "--include", "datasets[0].exclude": "--exclude",
    "datasets[0].min_size": "--min-size", "datasets[0].max_size": "--max-size",
    "datasets[0].min_age": "--min-age", "datasets[0].max_age": "--max-age",
    "datasets[0].files_from": "--files-from", "datasets[0].verify": "--verify",
    "engine.threads": "--transfers", "engine.bwlimit": "--bwlimit",
    "audit.signing_key": "--signing-key", "ledger": "--ledger",
    "datasets[0].encrypt.recipients_file": "--recipients-file",
    "datasets[0].encrypt": "--recipients-file",
}


def _flag_words(problem: str) -> str:
    """A manifest problem (``command line:1: datasets[0].source.url: ...``) in the
    words of the command line (``SRC: ...``)."""
    text = problem.removeprefix(f"{SHOWN}: ").removeprefix(f"{SHOWN}:1: ")
    for path, flag in sorted(_FLAGS.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, flag)
    for name in ("min_size", "max_size", "min_age", "max_age"):  # "smaller than min_size"
        text = text.replace(name, "--" + name.replace("_", "-"))
    return text.replace("the manifest's directory", "the current directory")


def _absolute(url: str) -> str:
    return comparable_url(url).rstrip("/")


def _refuse_ledger_inside(manifest: Manifest) -> None:
    """A ledger inside SRC would be copied, one inside DST deleted by ``sync --delete``."""
    ledger = comparable_url(manifest.ledger)
    spec = manifest.datasets[0]
    for side, url in (("SRC", spec.source.url), ("DST", spec.destination.url)):
        if ledger.startswith(comparable_url(url)):
            raise BadInput(f"--ledger {manifest.ledger}: lies inside {side} ({url}); put the "
                           "ledger outside both (the default is "
                           "$XDG_STATE_HOME/datamove/ledger)")


def _refuse_source_inside_destination(manifest: Manifest) -> None:
    """``sync --delete dst/sub dst`` would list SRC's own objects at DST as extras and
    delete them (rclone refuses overlapping remotes for sync too)."""
    spec = manifest.datasets[0]
    if comparable_url(spec.source.url).startswith(comparable_url(spec.destination.url)):
        raise BadInput(f"SRC {spec.source.url} lies inside DST {spec.destination.url}: "
                       "sync --delete would delete the source's own objects; choose a DST "
                       "that does not contain SRC")


# --- --dry-run --------------------------------------------------------------------------

def dry_run_line(item: PlanItem, delete: bool) -> str | None:
    """What ``--dry-run`` prints for one planned object: ``copy KEY`` (a copy or a
    re-copy), ``delete KEY`` (``sync --delete``), nothing for the rest."""
    from datamove.pipeline.report import human_bytes

    if item.action == Action.copy:
        return f"copy {item.key} ({human_bytes(item.size)}, {item.reason})"
    if item.action == Action.extra and delete:
        return f"delete {item.key} ({human_bytes(item.size)}, {item.reason})"
    return None


def dry_run_printer(out: Callable[[str], None], delete: bool) -> Callable[[str, PlanItem], None]:
    """An ``on_item`` for :func:`datamove.commands.copy.plan` printing each line."""
    def show(dataset: str, item: PlanItem) -> None:
        line = dry_run_line(item, delete)
        if line is not None:
            out(line)

    return show
