"""The ``datamove`` command: the root group, logging, and one module per command group.

    copy.py       plan, run, verify
    queries.py    status, history, show (the ledger, read only)
    keys.py       keys generate / recipient / rotate, encrypt, decrypt
    policy.py     policy check
    audit.py      audit keygen / verify / show / prove / checkpoint / acknowledge /
                  residency / export
    lifecycle.py  archive, schedule, restore, drill
    options.py    every option used by more than one command, and the error path
    logs.py       log lines: stderr or --log-file, text or JSON, timestamps, scrubbed
    quick.py      copy, sync, check (no manifest: SRC DST and rclone-style flags)

Each command parses, calls one API function, renders. The rule that keeps
``datamove --help`` fast (tests/test_cli_startup.py, benchmarks/startup.py): the cli
modules import only click, options.py, errors.py and redact.py at the top; the API,
the commands, the pipeline, stores, pyarrow and crypto are imported inside the
command function that needs them.

Exit codes (README.md, "Commands"): 0 ok, 1 objects failed or differ, 2 bad input,
3 refused by policy, 130 / 143 interrupted by SIGINT / SIGTERM (interrupt.py). With
``--json`` the last line of stdout is one JSON object that always carries
``exit_code``, errors included.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn

import click

from datamove import __version__
from datamove.cli.audit import audit, audit_export, audit_residency
from datamove.cli.copy import plan, run, verify
from datamove.cli.keys import decrypt, encrypt, keys
from datamove.cli.lifecycle import archive, drill, restore, schedule
from datamove.cli.logs import configure_logging
from datamove.cli.options import Group, remember_verbose
from datamove.cli.policy import policy
from datamove.cli.queries import history, show, status
from datamove.cli.quick import check_command, copy_command, sync_command
from datamove.pipeline import interrupt

__all__ = ["archive", "audit", "audit_export", "audit_residency", "configure_logging",
           "decrypt", "drill", "encrypt", "entry", "history", "keys", "main", "plan", "policy",
           "restore", "run", "schedule", "show", "status", "verify"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="datamove")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Move datasets between stores, verified end to end."""
    configure_logging(verbose)
    remember_verbose(verbose)  # a command's own -v (options.ops_options) adds to it


for _command in (plan, run, verify, status, history, show, keys, encrypt, decrypt, policy,
                 audit, archive, schedule, restore, drill):
    main.add_command(_command)
for _command in (copy_command, sync_command, check_command):  # quick commands
    main.add_command(_command)


def entry() -> None:
    """The ``datamove`` program: the CLI with SIGINT and SIGTERM handled (interrupt.py),
    ending the process without native teardown (:func:`exit_process`). Only here, not
    in ``main``: a test calling ``main`` in-process keeps its own handlers and process."""
    interrupt.install()
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:  # pragma: no cover - click's standalone mode always exits
        code = 0
    exit_process(code)


def exit_process(code: object) -> NoReturn:
    """End the process with ``code`` (as ``sys.exit`` reads it) once Python's own
    shutdown work is done, skipping the C++ teardown after it.

    A process that used pyarrow and deltalake can abort after its work is done,
    while C++ static objects are destroyed under native threads that are still
    alive ("terminate called without an active exception", exit 134; about one
    exit in 150 after a ledger read here, and 4 in 10 for a script that appends to
    a Delta table and reads it; apache/arrow#39862, delta-io/delta-rs#2184).
    Everything that matters has happened by then, so this runs what the
    interpreter would run first (wait for non-daemon threads, then the atexit
    handlers: logging's flush, temporary directories' cleanup), flushes the
    standard streams and leaves with ``os._exit``.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message on stderr, exit 1
        print(code, file=sys.stderr)
        status = 1
    # The interpreter's own order: threads first (they may still log), then atexit.
    getattr(threading, "_shutdown", lambda: None)()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing left to tell
            stream.flush()
    os._exit(status)
