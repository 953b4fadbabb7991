"""What every command group shares: the MANIFEST argument, --json, and the one
error path that turns a DatamoveError into its message and exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from datamove.errors import EXIT_BAD_INPUT, BadInput, DatamoveError
from datamove.pipeline.interrupt import Interrupted

MANIFEST = click.argument("manifest", type=click.Path(dir_okay=False, path_type=str))
JSON = click.option("--json", "as_json", is_flag=True,
                    help="Print one JSON summary object as the last line of stdout.")


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
