"""One module per command that is more than a copy run (archive, restore, ...)."""

DEFAULT_HISTORY_LIMIT = 20
"""Runs ``history`` shows unless told (the CLI's ``--limit`` default). Here, not in
status.py, so that ``datamove history --help`` need not import the queries (pyarrow)."""
