"""`python -m datamove`: the same command as the `datamove` script."""

from datamove.cli import entry

entry()
