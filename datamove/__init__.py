"""datamove: data migration and integrity verification engine.

The Python API lives in :mod:`datamove.api`; the ``datamove`` command is a thin
layer over it (:mod:`datamove.cli`).
"""

__version__ = "0.1.0"
