"""One module per command that is more than a copy run (archive, restore, ...)."""
