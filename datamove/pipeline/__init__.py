"""The copy pipeline: march, transfer, engine, cleanup, progress, report."""
