"""datamove: data migration and integrity verification engine.

The Python API lives in :mod:`datamove.api` (its ``__all__`` lists the public
names; docs/API.md documents them); the ``datamove`` command is a thin layer over
it (:mod:`datamove.cli`). The package ships its type hints (``py.typed``).
"""

__version__ = "0.1.0"
