"""What every command group shares: the options and arguments used by more than one
command (each defined once, here), and the one error path that turns a DatamoveError
into its message and exit code.

Light on purpose: `datamove --help` imports this, so nothing here imports a store,
pyarrow, the manifest model or the API (tests/test_cli_startup.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from datamove.errors import EXIT_BAD_INPUT, BadInput, DatamoveError
from datamove.pipeline.interrupt import Interrupted

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

MANIFEST = click.argument("manifest", type=click.Path(dir_okay=False, path_type=str))
JSON = click.option("--json", "as_json", is_flag=True,
                    help="Print one JSON summary object as the last line of stdout.")
DATASET = click.option("--dataset", "datasets", multiple=True, metavar="NAME",
                       help="Only this dataset (repeatable; default: all).")
SCHEDULER = click.option("--scheduler", metavar="tcp://HOST:PORT",
                         help="Run on an existing Dask scheduler instead of the embedded one "
                              "(docs/SCALE-OUT.md).")
PROGRESS = click.option("--progress/--no-progress", default=True, show_default=True,
                        help="Live progress on stderr when it is a terminal.")
POLICIES = click.option("--policies", multiple=True, metavar="PATH",
                        help="Policy file, directory or glob (repeatable), instead of "
                             "$DATAMOVE_POLICIES, the manifest's policies: or policies/*.yaml "
                             "beside the manifest.")

# HTML reports (run, audit residency; drill's --report takes .html too): reports/.
HTML_REPORT = click.option("--report", "report_path", metavar="FILE.html",
                           type=click.Path(dir_okay=False, path_type=str),
                           help="Also write a self-contained HTML report here (opens offline).")


def write_html_report(path: str, write: Callable[[], str], result: Any) -> None:
    """Write an HTML report after the work is done. A failure to write costs a warning
    in the result (the work is done and recorded), not the exit code; the path was
    checked before any work (reports.html.check_target)."""
    try:
        click.echo(f"datamove: report written to {write()}", err=True)
    except BadInput as exc:
        click.echo(f"datamove: warning: {exc}", err=True)
        if hasattr(result, "warn"):
            result.warn(str(exc))


def identity_option(help: str = "Identity file (any form) for encrypted datasets, instead "
                                "of the manifest's encrypt.identity.file.") -> Decorator:
    """``--identity FILE`` (one identity file, any form), with what it is for."""
    return click.option("--identity", "identity_file", metavar="FILE", help=help)


IDENTITY = identity_option()

# Reading archived objects back (restore, drill).
TIMEOUT = click.option("--timeout", default="12h", show_default=True, metavar="DURATION",
                       help="How long to wait for archive restores (S3 GLACIER, DEEP_ARCHIVE) "
                            "to complete, e.g. 30m, 12h, 2d; 0 starts them without waiting.")
POLL = click.option("--poll", default="60s", show_default=True, metavar="DURATION",
                    help="How often to look whether an archive restore completed.")
RESTORE_TIER = click.option("--restore-tier", type=click.Choice(["Expedited", "Standard", "Bulk"]),
                            default="Standard", show_default=True,
                            help="S3 retrieval tier for archive restores (cost vs speed).")
RESTORE_DAYS = click.option("--restore-days", type=click.IntRange(1, 365), default=1,
                            show_default=True,
                            help="Days S3 keeps a restored archive copy readable.")

# The audit log (audit verify, audit prove).
CHECKPOINT = click.option("--checkpoint", "checkpoint_file", metavar="FILE",
                          type=click.Path(dir_okay=False, path_type=str),
                          help="A checkpoint note kept outside the ledger "
                               "(`audit checkpoint -o`).")


def _context_pairs(ctx: click.Context, param: click.Parameter,
                   values: tuple[str, ...]) -> dict[str, str]:
    """``--kms-context k=v`` (repeatable) as a dict; a malformed or repeated key is a usage
    error naming the option, so a typo cannot silently change the context."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}")
        if key in pairs:
            raise click.BadParameter(f"key {key!r} given twice")
        pairs[key] = val
    return pairs


def kms_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say how to unwrap (or wrap) a KMS-protected identity file."""
    for option in reversed([
        click.option("--kms-context", "kms_context", multiple=True, metavar="KEY=VALUE",
                     callback=_context_pairs,
                     help="KMS encryption context pair (repeatable); unwrapping needs "
                          "exactly the pairs used when wrapping."),
        click.option("--kms-region", metavar="REGION",
                     help="AWS region of the KMS key [default: the key ARN's, else "
                          "AWS_DEFAULT_REGION]."),
        click.option("--kms-endpoint-url", metavar="URL",
                     help="KMS endpoint [default: AWS_ENDPOINT_URL, else AWS's]."),
    ]):
        command = option(command)
    return command


class Group(click.Group):
    """click's group, ending a command that a signal interrupted (interrupt.py)
    with one line and 128 + the signal's number, not click's "Aborted!" and 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.echo(f"datamove: interrupted by {exc.name}", err=True)
            sys.exit(exc.exit_code)


def parse_time(text: str, option: str) -> datetime:
    """A date or ISO 8601 time given to ``option``; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{option} {text!r}: not an ISO 8601 date or time; use e.g. 2025-01-31 "
                       "or 2025-01-31T12:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def call(action: Callable[[], Any], as_json: bool) -> Any:
    """Run an API call; a DatamoveError (or an unknown --dataset) becomes a message
    and its exit code."""
    try:
        return action()
    except DatamoveError as exc:
        fail(str(exc), exc.exit_code, as_json)
    except KeyError as exc:  # an unknown --dataset name
        fail(str(exc.args[0]) if exc.args else str(exc), EXIT_BAD_INPUT, as_json)


def fail(message: str, code: int, as_json: bool) -> Any:
    """Print the error on stderr (and as the JSON last line) and exit with ``code``."""
    click.echo(f"datamove: error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}, ensure_ascii=False))
    sys.exit(code)


def emit(result: Any, as_json: bool) -> None:
    """Print a result (a report, a query answer: anything with ``to_dict``,
    ``render`` and ``exit_code``), as one JSON object on the last line with
    ``--json``, and exit with its code."""
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        result.render(sys.stdout)
    sys.exit(result.exit_code)


def finish(action: Callable[[], Any], as_json: bool) -> None:
    """Run a writing command (run, verify, keys rotate …); print its report; exit with
    its code."""
    emit(call(action, as_json), as_json)


def datasets_or_all(datasets: tuple[str, ...]) -> list[str] | None:
    """``--dataset`` as the API takes it: the names given, or None for all."""
    return list(datasets) or None


def progress_of(progress: bool, as_json: bool) -> Any:
    """The live progress display ``--progress`` asks for: none with ``--json``, and none
    unless stderr is a terminal (pipeline/progress.py). Imported here, not at the top:
    the progress display imports the copy pipeline."""
    from datamove.pipeline.progress import progress_for

    return progress_for(progress and not as_json)
