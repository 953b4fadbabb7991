"""What every command group shares: the options and arguments used by more than one
command (each defined once, here), and the one error path that turns a DatamoveError
into its message and exit code.

Light on purpose: `datamove --help` imports this, so nothing here imports a store,
pyarrow, the manifest model or the API (tests/test_cli_startup.py).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from datamove.cli.logs import LOG_FORMATS
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


def write_html_report(path: str, write: Callable[[], str], result: Any) -> Any:
    """Write an HTML report after the work is done; returns the result to print. A
    failure to write costs a warning in the result (the work is done and recorded),
    not the exit code; the path was checked before any work (reports.html.check_target).
    The API's reports are frozen (``with_warning`` gives the warned copy)."""
    try:
        click.echo(f"datamove: report written to {write()}", err=True)
    except BadInput as exc:
        click.echo(f"datamove: warning: {exc}", err=True)
        if hasattr(result, "with_warning"):
            return result.with_warning(str(exc))
        if hasattr(result, "warn"):
            result.warn(str(exc))
    return result


def identity_option(help: str = "Identity file (any form) for encrypted datasets, instead "
                                "of the manifest's encrypt.identity.file.") -> Decorator:
    """``-i/--identity FILE`` (one identity file, any form), with what it is for; the
    same spelling as ``keys recipient`` and ``decrypt`` (and age's ``-i``)."""
    return click.option("-i", "--identity", "identity_file", metavar="FILE", help=help)


IDENTITY = identity_option()

# A file of age recipients (age1… lines): encrypt's -R, keys rotate's new recipients.
RECIPIENTS_FILE_OPTS = ("-R", "--recipients-file")


def deprecated_spelling(old: str, new: str) -> None:
    """Say on stderr that ``old`` (a hidden option kept so scripts do not break) is
    spelled ``new`` now; tests/test_cli_options.py holds every visible option to
    one spelling."""
    click.echo(f"datamove: warning: {old} is deprecated; use {new}", err=True)


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


def key_value_pairs(values: tuple[str, ...],
                    parse: Callable[[str], Any] = str) -> dict[str, Any]:
    """Repeatable ``KEY=VALUE`` options as a dict, each VALUE through ``parse``; a
    malformed or repeated key is a usage error naming the option, so a typo cannot
    silently change what the command does."""
    pairs: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}")
        if key in pairs:
            raise click.BadParameter(f"key {key!r} given twice")
        pairs[key] = parse(text)
    return pairs


def _context_pairs(ctx: click.Context, param: click.Parameter,
                   values: tuple[str, ...]) -> dict[str, str]:
    """``--kms-context k=v`` (repeatable) as a dict of strings."""
    return key_value_pairs(values)


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
    close_ops({"error": message, "exit_code": code})
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}, ensure_ascii=False))
    sys.exit(code)


def emit(result: Any, as_json: bool) -> None:
    """Print a result (a report, a query answer: anything with ``to_dict``,
    ``render`` and ``exit_code``), as one JSON object on the last line with
    ``--json``, and exit with its code."""
    close_ops(result.to_dict())
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
    unless stderr is a terminal (pipeline/progress.py); with the stats lines and the
    metrics file of :func:`ops_options`. Imported here, not at the top: the progress
    display imports the copy pipeline."""
    from datamove.pipeline.progress import progress_for

    ops = _ops()
    if ops is None:
        return progress_for(progress and not as_json)
    observers = []
    if ops.metrics_file:
        from datamove.pipeline import metrics

        observers.append(metrics.observer(ops.metrics_file, ops.command, ops.manifest))
    ops.progress = progress_for(progress and not as_json, stats_every=ops.stats,
                                observers=observers)
    return ops.progress


# --- operations: logs, stats lines, metrics (one decorator, shared by every command) ---------

_OPS_KEY = "datamove.ops"
_VERBOSE_KEY = "datamove.verbose"  # the root group's -v, added to a command's own


@dataclass
class Ops:
    """What :func:`ops_options` parsed, kept on the click context for the command."""

    command: str
    manifest: str
    stats: float | None
    metrics_file: str | None
    progress: Any = None


def _ops() -> Ops | None:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_OPS_KEY) if ctx is not None else None


def remember_verbose(verbose: int) -> None:
    """The root group's ``-v`` count, which a command's own ``-v`` adds to."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_VERBOSE_KEY] = verbose


def parse_interval(text: str) -> float:
    """``--stats``: ``30s``, ``0.2s``, ``500ms``, ``1m``, ``1h`` or plain seconds; 0 is off."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not an interval such as 30s, 0.5s, 2m or 0 "
                                 "(off)", param_hint="--stats")
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[
        match.group(2)]


def ops_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``-v``, ``--log-format``, ``--log-file``, ``--stats`` and ``--metrics-file``: what an
    operator running a command from cron, CI or Kubernetes needs (docs/OPERATIONS.md).

    Logging is configured before the command runs (cli/logs.py); the stats interval
    and the metrics file reach the progress accountant through :func:`progress_of`;
    the final metrics are written by :func:`emit` or :func:`fail`, so a run that
    ends with an error still leaves its exit code in the file.
    """

    @functools.wraps(command)
    def with_ops(*args: Any, verbose: int, log_format: str, log_file: str | None,
                 stats: str | None, metrics_file: str | None, **kwargs: Any) -> Any:
        from datamove.cli.logs import configure_logging

        ctx = click.get_current_context()
        every = parse_interval(stats) if stats is not None else None
        try:
            configure_logging(ctx.meta.get(_VERBOSE_KEY, 0) + verbose, log_format, log_file)
        except OSError as exc:
            fail(f"--log-file {log_file}: cannot open it: {exc.strerror or exc}",
                 EXIT_BAD_INPUT, bool(kwargs.get("as_json")))
        ctx.meta[_OPS_KEY] = Ops(command=ctx.info_name or "", manifest=_what(kwargs),
                                 stats=every, metrics_file=metrics_file)
        return command(*args, **kwargs)

    for option in reversed([
        click.option("-v", "--verbose", count=True,
                     help="More log output (-v: a line per object; -vv: debug)."),
        click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
                     show_default=True,
                     help="Log lines as text or as one JSON object per line."),
        click.option("--log-file", metavar="PATH",
                     type=click.Path(dir_okay=False, path_type=str),
                     help="Append log lines to PATH instead of stderr."),
        click.option("--stats", metavar="INTERVAL",
                     help="A stats line every INTERVAL (e.g. 30s, 0.5s, 5m; 0: none) "
                          "[default: 30s when stderr is not a terminal, else none]."),
        click.option("--metrics-file", metavar="PATH",
                     type=click.Path(dir_okay=False, path_type=str),
                     help="Write Prometheus metrics to PATH (node_exporter textfile "
                          "collector), during the run and at its end."),
    ]):
        with_ops = option(with_ops)
    return with_ops


OPS = ops_options


def _what(params: dict[str, Any]) -> str:
    """The ``manifest`` label of the metrics: the manifest path as given, or a quick
    command's ``SRC DST`` (scrubbed: a URL may carry what looks like a credential)."""
    if params.get("manifest"):
        return str(params["manifest"])
    from datamove.redact import scrub

    return scrub(f"{params.get('source', '')} {params.get('destination', '')}".strip())


def close_ops(result: dict[str, Any]) -> None:
    """The command's end: the final metrics file, from its report (or its error)."""
    ops = _ops()
    if ops is None or not ops.metrics_file:
        return
    from datamove.pipeline import metrics

    snapshot = ops.progress.snapshot() if ops.progress is not None else None
    try:
        metrics.write(ops.metrics_file, metrics.facts_of_report(ops.command, ops.manifest,
                                                                result, snapshot))
    except DatamoveError as exc:  # the work is done and recorded: a warning, not an exit
        click.echo(f"datamove: warning: --metrics-file: {exc}", err=True)
