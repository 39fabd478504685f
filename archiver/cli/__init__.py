"""The ``archiver`` command line: thin wiring of the other packages."""
