"""The ``datamove`` command: the root group, logging, and one module per command group.

    copy.py       plan, run, verify
    queries.py    status, history, show (the ledger, read only)
    keys.py       keys generate / recipient / rotate, encrypt, decrypt
    policy.py     policy check
    audit.py      audit keygen / verify / show / prove / checkpoint / acknowledge /
                  residency / export
    lifecycle.py  archive, schedule, restore, drill
    options.py    every option used by more than one command, and the error path
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

import logging
import sys

import click

from datamove import __version__
from datamove.cli.audit import audit, audit_export, audit_residency
from datamove.cli.copy import plan, run, verify
from datamove.cli.keys import decrypt, encrypt, keys
from datamove.cli.lifecycle import archive, drill, restore, schedule
from datamove.cli.options import Group
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


for _command in (plan, run, verify, status, history, show, keys, encrypt, decrypt, policy,
                 audit, archive, schedule, restore, drill):
    main.add_command(_command)
for _command in (copy_command, sync_command, check_command):  # quick commands
    main.add_command(_command)


def configure_logging(verbose: int) -> None:
    """Log to stderr at WARNING, INFO (-v) or DEBUG (-vv), with no credential in any line.

    At DEBUG botocore logs request headers (session tokens, signatures) and
    bodies. Every record is scrubbed as it is created (redact.install_log_scrubber),
    whichever thread or library of this process makes it, and every handler already
    configured, including those of libraries that do not propagate to the root
    (distributed, tornado), also filters what it emits.
    """
    from datamove.redact import install_log_scrubber

    install_log_scrubber()
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    loggers = [logging.getLogger(), *(logger for logger in
                                      list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, _Scrub) for f in handler.filters):
                handler.addFilter(_Scrub())


class _Scrub(logging.Filter):
    """Replace anything that looks like a credential in a log line by <redacted>
    (for records the scrubbing factory did not make, or that changed since)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from datamove.redact import scrub_record

        scrub_record(record)
        return True


def entry() -> None:
    """The ``datamove`` program: the CLI with SIGINT and SIGTERM handled (interrupt.py).
    Only here, not in ``main``: a test calling ``main`` in-process keeps its own handlers."""
    interrupt.install()
    main()
